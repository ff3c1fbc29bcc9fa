"""mailmoat.commands"""
