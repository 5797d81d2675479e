"""C++ runtime generation: the layer plan (plan) and Jinja2 rendering (render)."""
