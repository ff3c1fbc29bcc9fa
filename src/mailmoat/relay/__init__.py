"""mailmoat.relay"""
