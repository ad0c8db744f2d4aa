"""tfward.cli"""
