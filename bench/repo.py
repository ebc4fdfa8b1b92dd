"""The repository's root, put on sys.path so that `python bench/NAME.py` finds deeprnn from any folder."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
