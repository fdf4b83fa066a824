// TFRecord files of tf.train.Example records holding an encoded image and an
// integer class (the layout of the Kaggle 104-flowers TFRecords).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "tlcore/data/dataset.h"

namespace tlcore {

struct TfRecordOptions {
  std::string image_key = "image";  // bytes_list feature: one encoded image
  std::string label_key = "class";  // int64_list feature: one class index
  // Names of classes 0..K-1; empty: "0".."max label".
  std::vector<std::string> classes;
};

// Every record of the shards that `pattern` names: a file, a glob such as
// "train/*.tfrec" (shards in byte order of their paths), or a folder (its
// *.tfrec / *.tfrecord files). The shards are scanned once on opening: the
// record framing and both masked CRC32Cs are checked and each record's
// label read, so the dataset knows its size and labels and reads any record
// directly. Images are read from disk on demand.
// Throws NotFound when nothing matches; FormatError naming the file, record
// and byte offset for a bad CRC, a truncated record, a missing feature or a
// feature of the wrong type, or a label outside `classes`; Unsupported when
// tlcore was built without protobuf.
std::shared_ptr<Dataset> open_tfrecords(const std::string& pattern,
                                        const TfRecordOptions& options = {});

}  // namespace tlcore
