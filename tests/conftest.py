import os
import sys
from pathlib import Path

# tests/cpu holds shared test helpers (oracle_torch.py); make them importable.
sys.path.insert(0, str(Path(__file__).parent / "cpu"))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
