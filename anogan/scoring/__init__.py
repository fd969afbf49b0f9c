"""anogan.scoring"""
