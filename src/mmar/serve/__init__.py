"""``mmar serve``: a web app (Gradio) over one loaded MMAR checkpoint.

config.py    ServeConfig: binding, queue and the limits on what a request may send
inputs.py    the checks of uploads, masks and prompts (pure functions, no gradio)
handlers.py  Service: what each tab does with the model (no gradio)
app.py       build_demo / launch: the gr.Blocks and its queue

It sits with the command line: it imports the pipelines, the model and the configs, and only
``mmar.cli.serve`` imports it. gradio is imported by app.py only (``pip install 'mmar[serve]'``).
"""
