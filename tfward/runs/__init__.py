"""tfward.runs"""
