"""mailmoat.ml"""
