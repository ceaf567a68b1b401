"""handflow.flow"""
