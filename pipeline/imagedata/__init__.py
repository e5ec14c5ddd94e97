"""imagedata"""
