"""mmar.evaluation: the judge CNN, Fréchet distances, the metrics and ``evaluate`` (`mmar eval`).

    from mmar.evaluation import evaluate, format_results
    model = mmar.MMAR.from_pretrained("runs/quickstart")
    res = evaluate(model, "mnist", n_per_class=20, sampling=model.sampling.replace(num_steps=25))
    print(format_results(res))

Shapes are judged from pixels by ``mmar.evaluation.check_scene`` (no learned model); validate
it with ``python -m mmar.evaluation.check_scene --n 5000``.

"classifier-FID" is the Fréchet distance in the judge's feature space, not Inception FID; the
standard FID (``InceptionFeatures``) needs Inception weights the user supplies.
"""

from mmar.evaluation.evaluate import evaluate, format_results
from mmar.evaluation.frechet import InceptionFeatures, feature_statistics, frechet_distance
from mmar.evaluation.judge import Judge, JudgeConfig, get_judge, train_judge

__all__ = [
    "InceptionFeatures",
    "Judge",
    "JudgeConfig",
    "evaluate",
    "feature_statistics",
    "format_results",
    "frechet_distance",
    "get_judge",
    "train_judge",
]
