import torch

from mmar.model.attention_mask import build_attention_mask
from mmar.model.sequence import pack_sequences
from mmar.tokenizers.special import SpecialTokenIds

SP = SpecialTokenIds(bos=2, eos=3, pad=0, boi=4, eoi=5)


def test_hand_checked_mixed_batch():
    # N = 2 image tokens. rows: t2i "7" ; i2t "8" ; img ; (right padded to length 7)
    b = pack_sequences([[7], [8], []], ["t2i", "i2t", "img"], 2, SP)
    assert b.input_ids.tolist() == [
        [2, 7, 4, 0, 0, 5, 0],
        [2, 4, 0, 0, 5, 8, 3],
        [2, 4, 0, 0, 5, 0, 0],
    ]
    m = b.attention_mask[:, 0].int().tolist()
    T = [
        [1, 0, 0, 0, 0, 0, 0],  # t2i: bos
        [1, 1, 0, 0, 0, 0, 0],  # prompt
        [1, 1, 1, 0, 0, 0, 0],  # boi
        [1, 1, 1, 1, 1, 0, 0],  # img_1 sees img_2 (bidirectional block)
        [1, 1, 1, 1, 1, 0, 0],  # img_2
        [1, 1, 1, 1, 1, 1, 0],  # eoi
        [0, 0, 0, 0, 0, 0, 1],
    ]  # padding attends itself only
    I2T = [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1],
    ]
    IMG = [
        [1, 0, 0, 0, 0, 0, 0],
        [1, 1, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 0, 0],
        [0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 1],
    ]
    assert m == [T, I2T, IMG]
    assert b.attention_mask.shape == (3, 1, 7, 7) and b.attention_mask.dtype == torch.bool


def test_labels_weights_positions():
    b = pack_sequences([[7, 9], [8]], ["t2i", "i2t"], 2, SP, prompt_ce_weight=0.5)
    # t2i: CE on the prompt (weight 0.5); i2t: CE on text and eos; bos/boi/eoi/image never
    assert b.labels.tolist() == [
        [-100, 7, 9, -100, -100, -100, -100],
        [-100, -100, -100, -100, -100, 8, 3],
    ]
    assert b.label_weights[0].tolist() == [0, 0.5, 0.5, 0, 0, 0, 0]
    assert b.position_ids.tolist() == [[0, 1, 2, 3, 4, 5, 6]] * 2
    assert b.image_start.tolist() == [4, 2]
    assert b.is_image.sum(1).tolist() == [2, 2]


def test_left_padding_aligns_image_blocks():
    b = pack_sequences([[7, 7, 7], []], ["gen", "gen"], 3, SP, padding_side="left")
    assert b.is_image[:, -3:].all() and not b.is_image[:, :-3].any()
    assert b.valid[1].tolist() == [False, False, False, True, True, True, True, True]
    assert b.position_ids[1, 3:].tolist() == [0, 1, 2, 3, 4]


def test_no_bos_vocabulary():
    sp = SpecialTokenIds(bos=None, eos=3, pad=3, boi=4, eoi=5)
    b = pack_sequences([[7]], ["i2t"], 1, sp)
    assert b.input_ids.tolist() == [[4, 3, 5, 7, 3]]
    assert b.labels.tolist() == [[-100, -100, -100, 7, 3]]


def test_pack_raises_on_unknown_kind():
    import pytest

    with pytest.raises(ValueError, match="unknown kind"):
        pack_sequences([[1]], ["video"], 2, SP)


def test_direct_mask_rule():
    block = torch.tensor([[0, 1, 1, 0, 2, 2]])
    valid = torch.ones(1, 6, dtype=torch.bool)
    m = build_attention_mask(block, valid)[0, 0]
    assert m[1, 2] and m[4, 5] and not m[1, 4] and not m[2, 3] and m[3, 2]
