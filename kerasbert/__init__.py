"""kerasbert: BERT in Keras 3, multitask fine-tuning, text-in TFLite export."""

import os

# The library is TensorFlow-first (tf.data tokenisation, SavedModel, TFLite).
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

from kerasbert.bert_config import BertConfig  # noqa: E402
from kerasbert.bert_embeddings import BertEmbeddings  # noqa: E402
from kerasbert.multi_head_self_attention import MultiHeadSelfAttention  # noqa: E402
from kerasbert.transformer_encoder_block import TransformerEncoderBlock  # noqa: E402
from kerasbert.bert_backbone import BertBackbone  # noqa: E402


from kerasbert.bert_tokenizer import BertTokenizer  # noqa: E402
from kerasbert.bert_preprocessor import BertPreprocessor  # noqa: E402
from kerasbert.text_model import text_model  # noqa: E402
from kerasbert.from_pretrained import from_pretrained, save_pretrained  # noqa: E402
__version__ = "0.1.0"
from kerasbert.multitask_bert import MultitaskBert  # noqa: E402
