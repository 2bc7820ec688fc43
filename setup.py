from setuptools import find_packages, setup

setup(
    name="kerasbert",
    version="0.1.0",
    description="BERT in Keras 3: multitask fine-tuning (CS224N minBERT) and text-in TFLite export",
    packages=find_packages(include=["kerasbert*", "training*", "export*"]),
    python_requires=">=3.10,<3.14",
    install_requires=[
        "tensorflow==2.21.*",
        "tensorflow-text==2.21.*",
        "keras>=3.15",
        "numpy",
        "safetensors",
        "ai-edge-litert",
        # lite/: the TensorFlow-free scorer and tokenizer the exports are read with.
        # Installed from ./lite with this package (`make setup`).
        "kerasbert-lite",
        "tqdm",
        # learning_curves.png of every run (training.plots).
        "matplotlib",
        # tf.summary.scalar, the run's tensorboard/ logs: TF 2.21 no longer requires it.
        "tensorboard",
    ],
    extras_require={
        # Encoders by hub name (`--model bert-base-uncased`), when online;
        # local folders and the packaged MiniLM need nothing more.
        "hub": ["huggingface_hub"],
        # The reference stack for parity tests. Install torch==2.13.0 first
        # (the Makefile does): a bare `torch` would pull a CUDA build.
        "test": [
            "pytest",
            # scipy / scikit-learn: the metric tests' references (the package computes
            # Pearson and accuracy itself).
            "scipy",
            "scikit-learn",
            "huggingface_hub",
            "torch==2.13.0",
            "transformers>=5",
            # MediaPipe's own TextEmbedder / TextClassifier run the device files.
            "mediapipe==1.2.*",
            "nbclient",
            "nbformat",
            "ipykernel",
        ],
    },
)
