"""tfward.daemon"""
