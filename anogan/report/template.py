"""The HTML of the report: one Jinja2 template, its style sheet and its one inline script.

Kept in Python rather than a package data file, so that every install carries it. The page
loads nothing: images are data URIs, the style and script are inline and allowed by their
hashes in the Content-Security-Policy, and everything else is refused.
"""

import base64
import hashlib
import logging

logger = logging.getLogger(__name__)

STYLE = """
body { font-family: sans-serif; margin: 1.5em auto; max-width: 72em; color: #1b1b1b; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { border-bottom: 1px solid #ccc; padding-bottom: 0.2em; margin-top: 1.6em; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
th { background: #f2f2f2; }
td.number { text-align: right; font-variant-numeric: tabular-nums; }
.notice { background: #fff4d6; border: 1px solid #e0b84c; padding: 0.7em 1em; }
.flagged { color: #a40000; font-weight: bold; }
.calm { color: #2d6a2d; }
.panels { display: flex; flex-wrap: wrap; gap: 1em; align-items: flex-start; }
figure { margin: 0; }
figcaption { font-size: 0.85em; color: #444; }
img.slice { width: 14em; image-rendering: pixelated; border: 1px solid #999; }
img.bar { height: 14em; width: 1.2em; border: 1px solid #999; }
.scale { display: flex; gap: 0.4em; align-items: stretch; }
.scale-labels { display: flex; flex-direction: column; justify-content: space-between;
  font-size: 0.8em; height: 17.5em; }
.muted { color: #666; font-size: 0.9em; }
section.series.hidden { display: none; }
tr.hidden { display: none; }
"""

SCRIPT = """
(function () {
  var box = document.getElementById("flagged-only");
  function apply() {
    var only = box.checked;
    var items = document.querySelectorAll("[data-flagged]");
    for (var i = 0; i < items.length; i++) {
      var hide = only && items[i].getAttribute("data-flagged") === "0";
      items[i].classList.toggle("hidden", hide);
    }
  }
  box.addEventListener("change", apply);
  apply();
  document.documentElement.setAttribute("data-report-ready", "yes");
})();
"""


def csp_hash(text: str) -> str:
    """The CSP source expression allowing one inline block with exactly this text."""
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return "'sha256-" + base64.b64encode(digest).decode("ascii") + "'"


CONTENT_SECURITY_POLICY = (
    "default-src 'none'; img-src data:; "
    f"style-src {csp_hash(STYLE)}; script-src {csp_hash(SCRIPT)}; "
    "base-uri 'none'; form-action 'none'"
)

TEMPLATE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="referrer" content="no-referrer">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>anogan anomaly report {{ run.finished }}</title>
<style>{{ style | safe }}</style>
</head>
<body>
<h1>Anomaly report</h1>
<p class="muted">Written {{ run.finished }} by anogan (f-AnoGAN) from {{ run.input.path }}</p>
<p class="notice"><strong>Decision support, not a diagnosis.</strong> These scores say how far
each image lies from the healthy images the model was trained on. A flag is a request to look,
not a finding; an unflagged series can still hold disease. Every image must be read by a
qualified clinician.</p>

<h2>Summary</h2>
<table>
<tr><th>Input</th><td>{{ run.input.path }} ({{ run.input.kind }})</td></tr>
<tr><th>Series scored</th><td class="number">{{ counts.series }}</td></tr>
<tr><th>Slices scored</th><td class="number">{{ counts.slices }}</td></tr>
<tr><th>Series flagged</th><td class="number">{{ counts.flagged_series }}
 ({{ counts.flagged_slices }} slices)</td></tr>
<tr><th>Inputs not scored</th><td class="number">{{ counts.failures }}</td></tr>
<tr><th>Scoring</th><td>{{ run.started }} to {{ run.finished }}</td></tr>
</table>

<h2>Model</h2>
<table>
<tr><th>Model</th><td>{{ model.reference }}</td></tr>
<tr><th>File sha256</th><td>{{ model.sha256 }}</td></tr>
<tr><th>Training data</th><td>{{ model.data }}</td></tr>
<tr><th>Trained</th><td>{{ model.trained_at }}{% if model.run_id %} (MLflow run
 {{ model.run_id }}){% endif %}</td></tr>
<tr><th>Threshold</th><td>slice score above {{ "%.5g" | format(calibration.threshold) }}</td></tr>
<tr><th>False-positive rate</th><td>{{ "%.1f" | format(100 * calibration.observed_fpr) }}% of
 {{ calibration.healthy_count }} healthy validation slices above the threshold (target
 {{ "%.1f" | format(100 * calibration.target_fpr) }}%)</td></tr>
<tr><th>Heatmap scale</th><td>0 to {{ "%.4g" | format(calibration.heatmap_max) }} residual
 |x - G(E(x))|, fixed at calibration for every slice of this report</td></tr>
<tr><th>Windows</th><td>{{ run.window_size }} px windows over slices resampled to
 {{ run.grid_size }} px, overlap {{ run.scoring.overlap }}; slice score:
 {{ run.scoring.aggregation }} of windows; series score:
 {% if series_top_k == 1 %}its highest slice score{% else %}mean of its top {{ series_top_k }}
 slice scores{% endif %}</td></tr>
{% for name, value in model.metrics.items() %}
<tr><th>Validation {{ name }}</th><td class="number">{{ "%.3f" | format(value) }}</td></tr>
{% endfor %}
</table>

<h2>Inputs not scored ({{ failures | length }})</h2>
{% if failures %}
<table>
<tr><th>Source</th><th>Reason</th></tr>
{% for failure in failures %}
<tr><td>{{ failure.source }}</td><td>{{ failure.reason }}</td></tr>
{% endfor %}
</table>
{% else %}
<p>Every input was scored.</p>
{% endif %}

<h2>Series by score</h2>
<p><label><input type="checkbox" id="flagged-only"> Show flagged series only</label></p>
<table>
<tr><th>Rank</th><th>Series</th><th>Patient</th><th>Modality</th><th>Description</th>
<th>Slices</th><th>Score</th><th>Healthy percentile</th><th>Flagged slices</th></tr>
{% for item in series %}
<tr data-flagged="{{ 1 if item.flagged_slices else 0 }}">
<td class="number">{{ loop.index }}</td>
<td><a href="#series-{{ loop.index }}">{{ item.series_id }}</a></td>
<td>{{ item.patient }}</td><td>{{ item.metadata.Modality }}</td>
<td>{{ item.metadata.SeriesDescription }}</td>
<td class="number">{{ item.shape[0] }}</td>
<td class="number">{{ "%.4g" | format(item.score) }}</td>
<td class="number">{{ "%.1f" | format(item.percentile) }}</td>
<td class="number {{ 'flagged' if item.flagged_slices else 'calm' }}">
{{ item.flagged_slices | length }}</td>
</tr>
{% endfor %}
</table>

{% for item in series %}
<section class="series" id="series-{{ loop.index }}"
 data-flagged="{{ 1 if item.flagged_slices else 0 }}">
<h2>{{ loop.index }}. {{ item.series_id }}
{% if item.flagged_slices %}<span class="flagged">flagged</span>
{%- else %}<span class="calm">not flagged</span>{% endif %}</h2>
<table>
<tr><th>First source</th><td>{{ item.first_source }}</td></tr>
{% for key, value in item.metadata.items() %}
<tr><th>{{ key }}</th><td>{{ value }}</td></tr>
{% endfor %}
<tr><th>Series score</th><td>{{ "%.4g" | format(item.score) }}, above
 {{ "%.1f" | format(item.percentile) }}% of healthy validation slices</td></tr>
<tr><th>Flagged slices</th><td>
{%- if item.flagged_slices %}{{ item.flagged_slices | join(", ") }}{% else %}none{% endif -%}
</td></tr>
<tr><th>Anomaly map</th><td>{{ item.map_file }}{% if item.dicom_dir %}; Secondary Capture:
 {{ item.dicom_dir }} ({{ item.dicom_files }} images){% endif %}</td></tr>
</table>
<div class="panels">
<figure>
{{ item.distribution | safe }}
<figcaption>Series score (red) against the healthy slice score distribution (grey, cumulative);
dashed: the threshold.</figcaption>
</figure>
<figure>
{{ item.profile | safe }}
<figcaption>Score of every slice; dashed: the threshold.</figcaption>
</figure>
</div>
{% if not item.previews %}<p class="muted">Slice images are shown for flagged series and the
{{ detailed_series }} highest scoring; this series' map is in {{ item.map_file }}.</p>{% endif %}
{% for preview in item.previews %}
<h3>Slice {{ preview.slice }}: score {{ "%.4g" | format(preview.score) }}
{% if preview.flagged %}<span class="flagged">above threshold</span>{% endif %}</h3>
<div class="panels">
<figure><img class="slice" src="{{ preview.image }}" alt="slice {{ preview.slice }}">
<figcaption>Image (model input)</figcaption></figure>
<figure><img class="slice" src="{{ preview.reconstruction }}" alt="reconstruction">
<figcaption>Reconstruction G(E(x))</figcaption></figure>
<figure><img class="slice" src="{{ preview.overlay }}" alt="heatmap overlay">
<figcaption>Heatmap |x - G(E(x))|</figcaption></figure>
<div class="scale"><img class="bar" src="{{ colour_bar }}" alt="colour scale">
<div class="scale-labels"><span>{{ "%.3g" | format(calibration.heatmap_max) }}</span>
<span>{{ "%.3g" | format(calibration.heatmap_max / 2) }}</span><span>0</span></div></div>
</div>
{% endfor %}
</section>
{% endfor %}
<script>{{ script | safe }}</script>
</body>
</html>
"""
