"""llava_star: Video-STaR self-training for LLaVA-family video LVLMs.

Importing the package only defines things: no model loads, no logging set-up, and no
torch or transformers import. Each stage lives in its own module (see README).
"""

__version__ = "0.1.0"
