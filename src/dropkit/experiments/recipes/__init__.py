"""The built-in recipes; importing this package registers them (see ``dropkit list``)."""

from . import (  # noqa: F401  (imported for their registration)
    cnn_spatial,
    digits_mlp,
    mnist1d_mlp,
    mnist_mlp,
    rnn_locked,
    srivastava_mnist,
    toy_mlp,
    transformer_lm,
    uci_mc,
    vit_droppath,
)
