"""Hand-written odd specs shared by backend tests: valid padding, 7x6 -> 3x3 and 7x7 -> 3x3
floor pools, kernels 1 and 5, multi-channel input, unfused activations, MSE without softmax."""

ODD_SPECS = [
    {
        "name": "odd-a",
        "input_shape": [2, 9, 8],
        "loss": "mse",
        "layers": [
            {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "valid"},  # 7x6
            {"type": "maxpool2d"},  # 3x3
            {"type": "sigmoid"},
            {"type": "dropout", "rate": 0.3},
            {"type": "conv2d", "filters": 2, "kernel": 1, "padding": "same"},
            {"type": "flatten"},
            {"type": "tanh"},
            {"type": "dense", "units": 5},
            {"type": "sigmoid"},
        ],
        "train": {"lr": 0.1, "batch_size": 4, "epochs": 1},
    },
    {
        "name": "odd-b",
        "input_shape": [1, 11, 11],
        "loss": "cross_entropy",
        "layers": [
            {"type": "conv2d", "filters": 2, "kernel": 5, "padding": "valid"},  # 7x7
            {"type": "relu"},
            {"type": "maxpool2d"},  # 3x3
            {"type": "conv2d", "filters": 3, "kernel": 3, "padding": "same"},
            {"type": "maxpool2d"},  # 1x1
            {"type": "flatten"},
            {"type": "dense", "units": 4},
            {"type": "softmax"},
        ],
        "train": {"lr": 0.1, "batch_size": 4, "epochs": 1},
    },
]
