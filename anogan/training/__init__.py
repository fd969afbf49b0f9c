"""anogan.training"""
