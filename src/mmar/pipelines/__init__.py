"""mmar.pipelines: the sampling loops, each typed on ``MMARModel`` + ``MMARProcessor`` and driven
by one ``SamplingConfig`` (default: the one the checkpoint recommends).

    TextToImagePipeline   masked-AR text-to-image with a KV-cached prompt
    CaptionPipeline       KV-cached captioning
    AnswerPipeline        KV-cached visual question answering ([img] question -> answer)
    EditingPipeline       inpainting, outpainting and variations: the sampler from kept tokens
    MMAR                  all three, with save/load: what ``mmar.MMAR.from_pretrained`` gives
"""

from mmar.pipelines.answering import AnswerPipeline
from mmar.pipelines.base import sample_seeds, sampling_config
from mmar.pipelines.captioning import CaptionPipeline
from mmar.pipelines.editing import EditingPipeline, box_keep_mask
from mmar.pipelines.mmar import MMAR
from mmar.pipelines.text_to_image import TextToImagePipeline

__all__ = [
    "MMAR",
    "AnswerPipeline",
    "CaptionPipeline",
    "EditingPipeline",
    "TextToImagePipeline",
    "box_keep_mask",
    "sample_seeds",
    "sampling_config",
]
