"""anogan.evaluation"""
