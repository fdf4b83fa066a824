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
  // Where record indexes are cached ("": the user's cache folder, as ShardOptions).
  std::string index_dir;
  int threads = 0;   // shards scanned at once on the first open; 0: one per core
  int max_open = 0;  // shard files open at once; 0: a quarter of the descriptor limit, <= 256
};

// Every record of the shards that `pattern` names: a file, a glob such as
// "train/*.tfrec" (shards in byte order of their paths), brace ranges
// ("train-{00..15}.tfrec"), a folder (its *.tfrec / *.tfrecord files) or a
// list file (.txt, one shard per line). The first open scans the shards in
// parallel: the record framing and both masked CRC32Cs are checked and each
// record's label read; each shard's record index is then cached, so opening
// again reads only the indexes (a changed shard is scanned again). Images are
// read from disk on demand, and each record's data CRC is checked then.
// Throws NotFound when nothing matches; FormatError naming the file, record
// and byte offset for a bad CRC, a truncated record, a missing feature or a
// feature of the wrong type, or a label outside `classes`; Unsupported when
// tlcore was built without protobuf.
std::shared_ptr<Dataset> open_tfrecords(const std::string& pattern,
                                        const TfRecordOptions& options = {});

}  // namespace tlcore
