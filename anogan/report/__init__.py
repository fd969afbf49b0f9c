"""anogan.report"""
