"""The loops: fit (train epochs with validation inside), evaluation (validate/test) and prediction.

One module each: `fit.py` (`FitLoop`), `evaluation.py` (`EvaluationLoop`), `prediction.py` (`PredictionLoop`).

Read `FitLoop.run` top to bottom: it is the pseudocode of docs/architecture.md, with each hook
called by name where it happens. Callback hooks run before the module's hook of the same name.
A loop gets what it needs passed in: the counters (`Progress`) and the logged results
(`RunResults`) when it is built, the run plan (plan.py: hooks, shortcuts, step callables) at
each run; it reads only public attributes of the Trainer.
"""

from fulmen.loops.evaluation import EvaluationLoop
from fulmen.loops.fit import FitLoop
from fulmen.loops.prediction import PredictionLoop

__all__ = ["EvaluationLoop", "FitLoop", "PredictionLoop"]
