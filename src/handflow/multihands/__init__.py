"""handflow.multihands"""
