"""`weights/sentencepiece_model.py` writes a SentencePiece `ModelProto` without protobuf: its bytes
equal the protobuf package's own serialisation of the same message (Google's encoder, through
`sentencepiece_model_pb2`), and the `sentencepiece` package reads them back piece for piece.
(That the repaired Gemma 3 vocabulary encodes as the reference does is test_gguf_270m.py's, on the
real 262,144-piece tokenizer.)"""

import sentencepiece as spm
from hypothesis import given, note, settings
from hypothesis import strategies as st
from sentencepiece import sentencepiece_model_pb2 as sp

from minigemma.weights.sentencepiece_model import BYTE, CONTROL, NORMAL, UNKNOWN, USER_DEFINED, model_proto, repaired_vocabulary

TYPES = (NORMAL, CONTROL, USER_DEFINED, BYTE)


def protobuf_model(pieces, scores, types, ids, add_dummy_prefix):
    """The same model, built with Google's protobuf encoder."""
    m = sp.ModelProto()
    for text, score, kind in zip(pieces, scores, types):
        piece = m.pieces.add()
        piece.piece, piece.score, piece.type = text, score, kind
    t = m.trainer_spec
    t.model_type, t.vocab_size, t.byte_fallback = sp.TrainerSpec.BPE, len(pieces), BYTE in types
    for name in ("unk_id", "bos_id", "eos_id", "pad_id"):
        setattr(t, name, -1 if ids[name] is None else ids[name])
    n = m.normalizer_spec
    n.name, n.add_dummy_prefix, n.remove_extra_whitespaces, n.escape_whitespaces = "identity", add_dummy_prefix, False, True
    return m.SerializeToString()


@st.composite
def vocabularies(draw):
    words = draw(st.lists(st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), min_size=1, max_size=12),
                          min_size=3, max_size=40, unique=True))
    pieces = ["<unk>", *words]  # one unknown piece, as SentencePiece wants
    types = [UNKNOWN] + draw(st.lists(st.sampled_from(TYPES), min_size=len(words), max_size=len(words)))
    scores = draw(st.lists(st.floats(-1e6, 1e6, width=32), min_size=len(pieces), max_size=len(pieces)))
    index = st.none() | st.integers(1, len(pieces) - 1)
    ids = {"unk_id": 0, "bos_id": draw(index), "eos_id": draw(index), "pad_id": draw(index)}
    return pieces, scores, types, ids, draw(st.booleans())


@settings(max_examples=40, deadline=None)
@given(vocabularies())
def test_bytes_equal_protobufs_serialisation(vocabulary):
    note(f"vocabulary: {vocabulary}")
    assert model_proto(*vocabulary) == protobuf_model(*vocabulary)


@settings(max_examples=20, deadline=None)
@given(vocabularies())
def test_sentencepiece_reads_every_piece_back(vocabulary):
    pieces, scores, types, ids, prefix = vocabulary
    types = [NORMAL if k == BYTE else k for k in types]  # SentencePiece's own rule: byte pieces are "<0x41>"
    note(f"vocabulary: {(pieces, scores, types, ids, prefix)}")
    model = spm.SentencePieceProcessor(model_proto=model_proto(pieces, scores, types, ids, prefix))
    assert [model.id_to_piece(i) for i in range(model.get_piece_size())] == pieces
    assert [model.is_control(i) for i in range(len(pieces))] == [k == CONTROL for k in types]
    assert [model.is_unknown(i) for i in range(len(pieces))] == [k == UNKNOWN for k in types]


def test_repairs_respell_spaces_rank_normal_pieces_and_mark_the_unknown_piece():
    tokens = ["<pad>", "<unk>", "a", "   ", "ab", "<0x41>", "<b>"]
    types = [CONTROL, CONTROL, NORMAL, USER_DEFINED, NORMAL, BYTE, USER_DEFINED]
    pieces, scores, repaired, = repaired_vocabulary(tokens, [7.0] * len(tokens), types, unk=1)
    assert pieces == ["<pad>", "<unk>", "a", "\u2581" * 3, "ab", "<0x41>", "<b>"]
    assert repaired == [CONTROL, UNKNOWN, NORMAL, NORMAL, NORMAL, BYTE, USER_DEFINED]
    assert scores == [7.0, 7.0, -2.0, -3.0, -4.0, 7.0, 7.0]  # normal pieces: minus their id (the merge order)
