"""effnet_tl.data: sources, the dataset doctor, class names, the tf.data pipeline, TFRecords."""

from effnet_tl.data.class_weights import class_weights
from effnet_tl.data.classes import (
    check_num_classes,
    class_count,
    read_labels,
    sorted_class_names,
    validate_num_classes,
    write_labels,
)
from effnet_tl.data.doctor import FileIssue, ScanReport, check_examples, scan
from effnet_tl.data.imagefile import FileCheck, inspect_file, load_rgb
from effnet_tl.data.pipeline import (
    RESIZE_POLICIES,
    eval_resize,
    make_dataset,
    read_eval_images,
    to_memory,
)
from effnet_tl.data.sources import (
    ArrayExamples,
    DatasetExamples,
    DatasetSource,
    FileExamples,
    resolve_source,
    stratified_split,
)
from effnet_tl.data.tfrecord import from_tfrecords, to_tfrecords
from effnet_tl.sizes import image_size_pair

__all__ = [
    "ArrayExamples",
    "DatasetExamples",
    "DatasetSource",
    "FileCheck",
    "FileExamples",
    "FileIssue",
    "RESIZE_POLICIES",
    "ScanReport",
    "check_examples",
    "check_num_classes",
    "class_count",
    "class_weights",
    "eval_resize",
    "from_tfrecords",
    "image_size_pair",
    "inspect_file",
    "load_rgb",
    "make_dataset",
    "read_eval_images",
    "read_labels",
    "resolve_source",
    "scan",
    "sorted_class_names",
    "stratified_split",
    "to_memory",
    "to_tfrecords",
    "validate_num_classes",
    "write_labels",
]
