// Which files a sharded dataset's pattern names (private to cpp/src/data).
#pragma once

#include <string>
#include <vector>

namespace tlcore::internal {

// The shard files `pattern` names:
// - brace ranges and lists, as in WebDataset and the shell:
//   "train-{000000..000999}.tar" (zero-padded to the first bound's width),
//   "{train,extra}-*.tar"; expanded in the order written, and every path they
//   name must exist;
// - glob characters (* ? [...]): the matching regular files, sorted byte-wise;
// - a folder: its files whose lowercase name ends with one of `extensions`,
//   sorted byte-wise;
// - a list file (a name ending ".txt"): one shard path per line, relative to
//   the list's folder, blank lines and "#" comments skipped;
// - anything else: that one file.
// Throws NotFound naming what is missing, InvalidArgument for a malformed or
// overly large brace expression.
std::vector<std::string> shard_paths(const std::string& pattern,
                                     const std::vector<std::string>& extensions);

// True if `name` ends, ignoring case, with one of `extensions`.
bool has_extension(const std::string& name, const std::vector<std::string>& extensions);

}  // namespace tlcore::internal
