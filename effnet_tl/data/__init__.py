"""effnet_tl.data: sources, the dataset doctor, class names, the tf.data pipeline, TFRecords."""

from effnet_tl.data.class_weights import class_weights
from effnet_tl.data.classes import check_num_classes, read_labels, sorted_class_names, write_labels
from effnet_tl.data.doctor import FileIssue, ScanReport, check_examples, scan
from effnet_tl.data.imagefile import FileCheck, inspect_file, load_rgb
from effnet_tl.data.pipeline import RESIZE_POLICIES, make_dataset, to_memory
from effnet_tl.data.sources import (
    ArrayExamples,
    DatasetExamples,
    DatasetSource,
    FileExamples,
    resolve_source,
    stratified_split,
)
from effnet_tl.data.tfrecord import from_tfrecords, to_tfrecords

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
    "class_weights",
    "from_tfrecords",
    "inspect_file",
    "load_rgb",
    "make_dataset",
    "read_labels",
    "resolve_source",
    "scan",
    "sorted_class_names",
    "stratified_split",
    "to_memory",
    "to_tfrecords",
    "write_labels",
]
