"""Where a run trains, and on how many devices and machines (docs/scaling.md, docs/gpu.md).

hardware.py the CPU and the GPUs handed to this container, read without TensorFlow; devices.py the
device plan (precision, XLA, steps per call: the whole GPU path); distribution.py the tf.distribute
strategy and who writes; keras_multiworker.py Keras' two corrections for multi-worker training;
cluster_spec.py TF_CONFIG's cluster, one function for both launchers: compose_cluster.py for the
compose multiworker profile's containers, jobset_cluster.py for the pods of a JobSet or a TrainJob.
"""
