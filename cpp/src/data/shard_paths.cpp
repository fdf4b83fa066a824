#include "internal/shard_paths.h"

#include <glob.h>

#include <algorithm>
#include <cctype>
#include <filesystem>
#include <fstream>
#include <memory>
#include <system_error>

#include "internal/checks.h"
#include "tlcore/error.h"

namespace tlcore::internal {
namespace {

namespace fs = std::filesystem;

// More names than any real dataset has shards: a typo such as {0..999999999}
// fails at once instead of filling memory.
constexpr std::size_t kMaxExpanded = 1'000'000;

bool has_glob_characters(const std::string& pattern) {
  return pattern.find_first_of("*?[") != std::string::npos;
}

bool is_number(const std::string& s) {
  return !s.empty() && s.size() <= 18 &&
         std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isdigit(c); });
}

// The alternatives one {...} stands for.
std::vector<std::string> brace_alternatives(const std::string& body, const std::string& pattern) {
  const std::size_t dots = body.find("..");
  if (dots != std::string::npos) {
    const std::string first = body.substr(0, dots), last = body.substr(dots + 2);
    if (!is_number(first) || !is_number(last)) {
      throw InvalidArgument(pattern + ": a brace range must be {FIRST..LAST} of decimal numbers");
    }
    const long long lo = std::stoll(first), hi = std::stoll(last);
    if (hi < lo) throw InvalidArgument(pattern + ": brace range {" + body + "} runs backwards");
    if (static_cast<unsigned long long>(hi - lo) >= kMaxExpanded) {
      throw InvalidArgument(pattern + ": brace range {" + body + "} names over " +
                            std::to_string(kMaxExpanded) + " shards");
    }
    std::vector<std::string> out;
    for (long long v = lo; v <= hi; ++v) {
      std::string s = std::to_string(v);
      if (s.size() < first.size()) s.insert(0, first.size() - s.size(), '0');
      out.push_back(std::move(s));
    }
    return out;
  }
  std::vector<std::string> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = body.find(',', start);
    out.push_back(body.substr(start, comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

// Every expansion of the braces in `pattern`, in the order written.
std::vector<std::string> expand_braces(const std::string& pattern) {
  std::vector<std::string> done{""};
  std::size_t pos = 0;
  while (pos < pattern.size()) {
    const std::size_t open = pattern.find('{', pos);
    const std::string literal = pattern.substr(pos, open - pos);
    for (std::string& d : done) d += literal;
    if (open == std::string::npos) break;
    const std::size_t close = pattern.find('}', open);
    if (close == std::string::npos) throw InvalidArgument(pattern + ": '{' without '}'");
    const std::vector<std::string> alternatives =
        brace_alternatives(pattern.substr(open + 1, close - open - 1), pattern);
    if (done.size() * alternatives.size() > kMaxExpanded) {
      throw InvalidArgument(pattern + ": the braces name over " + std::to_string(kMaxExpanded) +
                            " shards");
    }
    std::vector<std::string> next;
    next.reserve(done.size() * alternatives.size());
    for (const std::string& d : done) {
      for (const std::string& a : alternatives) next.push_back(d + a);
    }
    done = std::move(next);
    pos = close + 1;
  }
  return done;
}

struct GlobFree {
  void operator()(glob_t* g) const { globfree(g); }
};

// Regular files matching a glob, sorted byte-wise (glob(3) sorts by locale collation).
std::vector<std::string> glob_files(const std::string& pattern) {
  glob_t g{};
  const int r = ::glob(pattern.c_str(), 0, nullptr, &g);
  const std::unique_ptr<glob_t, GlobFree> owner(&g);
  if (r == GLOB_NOSPACE) throw Error(pattern + ": out of memory expanding the pattern");
  if (r == GLOB_ABORTED) throw Error(pattern + ": cannot read a folder the pattern names");
  std::vector<std::string> paths;
  std::error_code ec;
  for (std::size_t i = 0; r == 0 && i < g.gl_pathc; ++i) {
    if (fs::is_regular_file(g.gl_pathv[i], ec)) paths.emplace_back(g.gl_pathv[i]);
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::vector<std::string> folder_files(const std::string& folder,
                                      const std::vector<std::string>& extensions) {
  std::vector<std::string> paths;
  std::error_code ec;
  for (const fs::directory_entry& entry : fs::directory_iterator(folder, ec)) {
    const std::string name = entry.path().filename().string();
    if (!is_hidden(name) && has_extension(name, extensions) && entry.is_regular_file(ec)) {
      paths.push_back(entry.path().string());
    }
  }
  if (ec) throw Error(folder + ": cannot list folder: " + ec.message());
  std::sort(paths.begin(), paths.end());
  return paths;
}

std::vector<std::string> listed_files(const std::string& list) {
  std::ifstream in(list);
  if (!in) throw NotFound(list + ": cannot read the shard list");
  const fs::path base = fs::path(list).parent_path();
  std::vector<std::string> paths;
  std::string line;
  while (std::getline(in, line)) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    const std::size_t first = line.find_first_not_of(" \t");
    if (first == std::string::npos || line[first] == '#') continue;
    const fs::path p(line.substr(first));
    paths.push_back(p.is_absolute() ? p.string() : (base / p).string());
  }
  return paths;
}

void require_files(const std::vector<std::string>& paths, const std::string& pattern) {
  std::error_code ec;
  for (const std::string& p : paths) {
    if (!fs::exists(p, ec)) throw NotFound(p + ": no such shard (named by " + pattern + ")");
  }
}

}  // namespace

bool has_extension(const std::string& name, const std::vector<std::string>& extensions) {
  std::string lower = name;
  std::transform(lower.begin(), lower.end(), lower.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return std::any_of(extensions.begin(), extensions.end(), [&](const std::string& e) {
    return lower.size() > e.size() && lower.compare(lower.size() - e.size(), e.size(), e) == 0;
  });
}

std::vector<std::string> shard_paths(const std::string& pattern,
                                     const std::vector<std::string>& extensions) {
  std::vector<std::string> paths;
  if (pattern.find('{') != std::string::npos) {
    for (const std::string& p : expand_braces(pattern)) {
      if (!has_glob_characters(p)) {
        paths.push_back(p);
        continue;
      }
      std::vector<std::string> matched = glob_files(p);
      paths.insert(paths.end(), matched.begin(), matched.end());
    }
    require_files(paths, pattern);
  } else if (has_glob_characters(pattern)) {
    paths = glob_files(pattern);
    if (paths.empty()) throw NotFound(pattern + ": no files match");
  } else {
    std::error_code ec;
    const fs::file_status status = fs::status(pattern, ec);
    if (!fs::exists(status)) throw NotFound(pattern + ": no such file or folder");
    if (fs::is_directory(status)) {
      paths = folder_files(pattern, extensions);
      if (paths.empty()) {
        std::string names;
        for (const std::string& e : extensions) names += (names.empty() ? "" : ", ") + e;
        throw NotFound(pattern + ": no " + names + " files in the folder");
      }
    } else if (has_extension(pattern, {".txt"})) {
      paths = listed_files(pattern);
      require_files(paths, pattern);
    } else {
      paths = {pattern};
    }
  }
  if (paths.empty()) throw NotFound(pattern + ": names no shard files");
  return paths;
}

}  // namespace tlcore::internal
