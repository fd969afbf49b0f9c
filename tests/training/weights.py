"""Comparing the weights of two training runs that differ only in how floats are rounded."""

import torch

NETWORKS = ("generator", "critic", "encoder")


def network_differences(
    reference: dict[str, torch.Tensor],
    other: dict[str, torch.Tensor],
    initial: dict[str, torch.Tensor],
    network: str,
) -> tuple[float, float, float]:
    """How far `other`'s weights of `network` are from `reference`'s.

    Integer counters must be equal (asserted here). Every float tensor counts, batch-norm
    running statistics too: they follow the weights before them, so a near-zero bias whose
    rounding differs moves its channel's running mean by as much.

    Returns:
        The max absolute difference; the mean absolute difference over the mean change
        training made from `initial`; and that mean change, so that a caller can check the
        run did train (and the comparison can fail).
    """
    keys = [key for key in reference if key.startswith(network)]
    counters = [key for key in keys if not reference[key].is_floating_point()]
    assert all(torch.equal(reference[key], other[key]) for key in counters), network
    keys = [key for key in keys if key not in counters]
    difference = torch.cat([(reference[key] - other[key]).abs().flatten() for key in keys])
    change = torch.cat([(reference[key] - initial[key]).abs().flatten() for key in keys])
    relative = (difference.mean() / change.mean()).item()
    print(f"{network}: max difference {difference.max():.1e}, mean over change {relative:.1e}")
    return difference.max().item(), relative, change.mean().item()
