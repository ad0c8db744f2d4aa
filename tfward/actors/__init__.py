"""tfward.actors"""
