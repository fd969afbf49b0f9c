"""anogan.models"""
