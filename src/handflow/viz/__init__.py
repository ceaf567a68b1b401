"""handflow.viz"""
