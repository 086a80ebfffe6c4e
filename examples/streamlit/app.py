"""A small Streamlit app to run behind tideway (see examples/streamlit/README.md).

It draws a picture with `st.image`: Streamlit keeps such media in the memory of the replica that rendered
it and the browser fetches it afterwards by URL, so that request must reach the same replica as the
session's WebSocket — what `affinity = "cookie"` guarantees.
"""

import os

import numpy as np
import streamlit as st

REPLICA = os.environ.get("TIDEWAY_REPLICA", "standalone")

st.title("Hello from Streamlit")
st.write(f"This session runs on **{REPLICA}**.")
name = st.text_input("Your name", "")
st.write(f"Hello, {name or 'stranger'}, from {REPLICA}")

size = st.slider("Picture size", 16, 256, 64)
gradient = np.linspace(0, 255, size, dtype=np.uint8)
st.image(np.outer(gradient, gradient[::-1]), caption=f"drawn by {REPLICA}")
