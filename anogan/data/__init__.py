"""anogan.data"""
