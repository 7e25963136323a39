"""A module of the plugin's own, imported relatively."""


def greeting_for(name: str) -> str:
    return f"Hello, {name}!"
