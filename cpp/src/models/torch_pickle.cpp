#include "torch_pickle.h"

#include <algorithm>
#include <cstring>
#include <map>
#include <unordered_map>

#include "tlcore/error.h"

namespace tlcore::models::detail {
namespace {

PyRef make(PyObject::Kind kind) {
  auto o = std::make_shared<PyObject>();
  o->kind = kind;
  return o;
}

PyRef make_int(int64_t v) {
  auto o = make(PyObject::Kind::kInt);
  o->i = v;
  return o;
}

PyRef make_string(std::string s) {
  auto o = make(PyObject::Kind::kString);
  o->s = std::move(s);
  return o;
}

torch::ScalarType storage_dtype(const std::string& type) {
  static const std::map<std::string, torch::ScalarType> kTypes{
      {"torch.FloatStorage", torch::kFloat}, {"torch.DoubleStorage", torch::kDouble},
      {"torch.HalfStorage", torch::kHalf},   {"torch.BFloat16Storage", torch::kBFloat16},
      {"torch.LongStorage", torch::kLong},   {"torch.IntStorage", torch::kInt},
      {"torch.ShortStorage", torch::kShort}, {"torch.CharStorage", torch::kChar},
      {"torch.ByteStorage", torch::kByte},   {"torch.BoolStorage", torch::kBool},
      {"torch.UntypedStorage", torch::kByte}};
  auto it = kTypes.find(type);
  if (it == kTypes.end()) throw Unsupported("unsupported storage type " + type);
  return it->second;
}

class Machine {
 public:
  Machine(PickleInput& in, const StorageLoader& load, const std::string& source)
      : in_(in), load_(load), source_(source) {}

  PyRef run() {
    for (;;) {
      const size_t at = in_.pos;
      const uint8_t op = u8();
      switch (op) {
        case 0x80:  // PROTO
          u8();
          break;
        case 0x95:  // FRAME
          take(8);
          break;
        case '.':  // STOP
          if (stack_.size() != 1) fail("stack holds " + std::to_string(stack_.size()) + " at STOP");
          return stack_.back();
        case '(':
          marks_.push_back(stack_.size());
          break;
        case '0':
          pop();
          break;
        case '1':
          pop_mark();
          break;
        case '2':
          push(top());
          break;
        case 'N':
          push(make(PyObject::Kind::kNone));
          break;
        case 0x88:
        case 0x89: {
          auto b = make(PyObject::Kind::kBool);
          b->i = op == 0x88;
          push(b);
          break;
        }
        case 'J': {
          int32_t v;
          std::memcpy(&v, take(4), 4);
          push(make_int(v));
          break;
        }
        case 'K':
          push(make_int(u8()));
          break;
        case 'M': {
          const uint8_t* p = reinterpret_cast<const uint8_t*>(take(2));
          push(make_int(p[0] | (p[1] << 8)));
          break;
        }
        case 0x8a:  // LONG1
          push(long_int(u8()));
          break;
        case 0x8b:  // LONG4
          push(long_int(u32()));
          break;
        case 'G': {
          const uint8_t* p = reinterpret_cast<const uint8_t*>(take(8));
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = (bits << 8) | p[k];
          auto f = make(PyObject::Kind::kFloat);
          std::memcpy(&f->f, &bits, 8);
          push(f);
          break;
        }
        case 'X':  // BINUNICODE
        case 'T':  // BINSTRING
        case 'B':  // BINBYTES
          push(text(u32()));
          break;
        case 0x8c:  // SHORT_BINUNICODE
        case 'U':   // SHORT_BINSTRING
        case 'C':   // SHORT_BINBYTES
          push(text(u8()));
          break;
        case 0x8d:  // BINUNICODE8
        case 0x8e:  // BINBYTES8
          push(text(u64()));
          break;
        case ')':
          push(make(PyObject::Kind::kTuple));
          break;
        case 't': {
          auto t = make(PyObject::Kind::kTuple);
          t->items = pop_mark();
          adopt_all(*t, t->items);
          push(t);
          break;
        }
        case 0x85:
        case 0x86:
        case 0x87: {
          auto t = make(PyObject::Kind::kTuple);
          const size_t n = op - 0x84;
          // Items above the innermost MARK only: taking one below it breaks that MARK.
          if (stack_.size() < n + (marks_.empty() ? 0 : marks_.back())) fail("stack underflow");
          t->items.assign(stack_.end() - n, stack_.end());
          stack_.resize(stack_.size() - n);
          adopt_all(*t, t->items);
          push(t);
          break;
        }
        case ']':
          push(make(PyObject::Kind::kList));
          break;
        case 'l': {
          auto l = make(PyObject::Kind::kList);
          l->items = pop_mark();
          adopt_all(*l, l->items);
          push(l);
          break;
        }
        case 'a': {
          auto v = pop();
          auto& list = *expect(top(), PyObject::Kind::kList, "APPEND");
          adopt(list, v);
          list.items.push_back(v);
          break;
        }
        case 'e': {
          auto items = pop_mark();
          auto& list = *expect(top(), PyObject::Kind::kList, "APPENDS");
          adopt_all(list, items);
          list.items.insert(list.items.end(), items.begin(), items.end());
          break;
        }
        case '}':
          push(make(PyObject::Kind::kDict));
          break;
        case 'd': {
          auto d = make(PyObject::Kind::kDict);
          d->items = pop_mark();
          if (d->items.size() % 2 != 0) fail("DICT with an odd number of items");
          adopt_all(*d, d->items);
          push(d);
          break;
        }
        case 's': {
          auto v = pop();
          auto k = pop();
          auto& dict = *expect(top(), PyObject::Kind::kDict, "SETITEM");
          adopt(dict, k);
          adopt(dict, v);
          dict.items.push_back(k);
          dict.items.push_back(v);
          break;
        }
        case 'u': {
          auto kv = pop_mark();
          if (kv.size() % 2 != 0) fail("SETITEMS with an odd number of items");
          auto& dict = *expect(top(), PyObject::Kind::kDict, "SETITEMS");
          adopt_all(dict, kv);
          dict.items.insert(dict.items.end(), kv.begin(), kv.end());
          break;
        }
        case 'q':
          memo_[u8()] = top();
          break;
        case 'r':
          memo_[u32()] = top();
          break;
        case 0x94:  // MEMOIZE
          memo_[memo_.size()] = top();
          break;
        case 'h':
          push(memo(u8()));
          break;
        case 'j':
          push(memo(u32()));
          break;
        case 'c': {
          auto g = make(PyObject::Kind::kGlobal);
          g->s = line();
          g->s += "." + line();
          push(g);
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          auto name = pop();
          auto module = pop();
          // Names come from the memo too: a global made of itself doubles at each step.
          if (module->s.size() + name->s.size() > kMaxGlobalName)
            fail("a global name longer than " + std::to_string(kMaxGlobalName) + " bytes");
          auto g = make(PyObject::Kind::kGlobal);
          g->s = module->s + "." + name->s;
          push(g);
          break;
        }
        case 'R': {
          auto args = pop();
          auto callable = pop();
          auto result = reduce(callable, args);
          consume(*args);
          push(result);
          break;
        }
        case 0x81: {  // NEWOBJ: no class a state dict needs is built this way
          pop();
          refuse(pop());
        }
        case 'b':  // BUILD: object state (e.g. a state dict's _metadata) is not needed
          pop();
          top();
          break;
        case 'Q':
          push(persistent_load(pop()));
          break;
        default: {
          char hex[8];
          std::snprintf(hex, sizeof hex, "0x%02x", op);
          fail(std::string("unsupported pickle opcode ") + hex + " at offset " +
               std::to_string(at));
        }
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& what) const {
    throw FormatError(source_ + ": malformed checkpoint: " + what);
  }

  const char* take(uint64_t n) {
    if (n > in_.size - in_.pos) fail("truncated");
    const char* p = in_.data + in_.pos;
    in_.pos += n;
    return p;
  }
  uint8_t u8() { return static_cast<uint8_t>(*take(1)); }
  uint32_t u32() {
    uint32_t v;
    std::memcpy(&v, take(4), 4);
    return v;
  }
  uint64_t u64() {
    uint64_t v;
    std::memcpy(&v, take(8), 8);
    return v;
  }
  PyRef text(uint64_t n) { return make_string(std::string(take(n), n)); }
  std::string line() {
    const void* end = std::memchr(in_.data + in_.pos, '\n', in_.size - in_.pos);
    if (end == nullptr) fail("truncated GLOBAL");
    const size_t n = static_cast<const char*>(end) - (in_.data + in_.pos);
    std::string s(take(n), n);
    take(1);
    return s;
  }
  PyRef long_int(uint64_t n) {
    const char* p = take(n);
    if (n > 8) {
      auto big = make(PyObject::Kind::kBigInt);
      big->s.assign(p, n);
      return big;
    }
    uint64_t v = 0;
    for (uint64_t k = 0; k < n; ++k)
      v |= static_cast<uint64_t>(static_cast<uint8_t>(p[k])) << (8 * k);
    if (n > 0 && n < 8 && (static_cast<uint8_t>(p[n - 1]) & 0x80)) v |= ~uint64_t{0} << (8 * n);
    return make_int(static_cast<int64_t>(v));
  }

  void push(PyRef o) { stack_.push_back(std::move(o)); }
  PyRef pop() {
    if (stack_.empty() || (!marks_.empty() && stack_.size() == marks_.back()))
      fail("stack underflow");
    auto o = std::move(stack_.back());
    stack_.pop_back();
    return o;
  }
  const PyRef& top() const {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<PyRef> pop_mark() {
    if (marks_.empty()) fail("no MARK");
    const size_t m = marks_.back();
    marks_.pop_back();
    std::vector<PyRef> items(stack_.begin() + static_cast<std::ptrdiff_t>(m), stack_.end());
    stack_.resize(m);
    return items;
  }
  PyRef memo(uint64_t k) const {
    auto it = memo_.find(k);
    if (it == memo_.end()) fail("memo entry " + std::to_string(k) + " is missing");
    return it->second;
  }
  const PyRef& expect(const PyRef& o, PyObject::Kind kind, const char* op) const {
    if (o->kind != kind) fail(std::string(op) + " on the wrong kind of object");
    return o;
  }
  int64_t as_int(const PyRef& o) const {
    if (o->kind != PyObject::Kind::kInt) fail("expected an integer");
    return o->i;
  }
  std::vector<int64_t> as_ints(const PyRef& o) const {
    if (o->kind != PyObject::Kind::kTuple && o->kind != PyObject::Kind::kList) {
      fail("expected a tuple of integers");
    }
    std::vector<int64_t> v;
    for (const auto& item : o->items) v.push_back(as_int(item));
    return v;
  }

  PyRef persistent_load(const PyRef& pid) {
    if (pid->kind != PyObject::Kind::kTuple || pid->items.size() < 5 ||
        pid->items[0]->s != "storage" || pid->items[1]->kind != PyObject::Kind::kGlobal) {
      fail("unexpected persistent id");
    }
    const auto dtype = storage_dtype(pid->items[1]->s);
    const auto& key = pid->items[2];
    const std::string key_s = key->kind == PyObject::Kind::kInt ? std::to_string(key->i) : key->s;
    const int64_t numel = as_int(pid->items[4]);
    if (numel < 0) fail("negative storage size");
    auto storage = make(PyObject::Kind::kStorage);
    storage->tensor = load_(key_s, dtype, numel);
    // Storage views of the legacy format: (view key, offset, size).
    if (pid->items.size() > 5 && pid->items[5]->kind == PyObject::Kind::kTuple) {
      const auto& view = pid->items[5]->items;
      if (view.size() != 3) fail("unexpected storage view");
      const int64_t offset = as_int(view[1]), size = as_int(view[2]);
      if (offset < 0 || size < 0 || offset > numel || size > numel - offset)
        fail("storage view out of range");
      storage->tensor = storage->tensor.narrow(0, offset, size);
    }
    return storage;
  }

  PyRef rebuild_tensor(const std::vector<PyRef>& a) {
    if (a.size() < 4 || a[0]->kind != PyObject::Kind::kStorage) fail("unexpected tensor arguments");
    const auto& storage = a[0]->tensor;
    const int64_t offset = as_int(a[1]);
    const auto sizes = as_ints(a[2]);
    const auto strides = as_ints(a[3]);
    if (sizes.size() != strides.size()) fail("tensor sizes and strides differ in length");
    int64_t last = offset;
    bool empty = false;
    for (size_t d = 0; d < sizes.size(); ++d) {
      if (sizes[d] < 0 || strides[d] < 0) fail("negative tensor size or stride");
      if (sizes[d] == 0) empty = true;
      int64_t reach = 0;  // overflow-checked: the numbers come from the file
      if (__builtin_mul_overflow(std::max<int64_t>(sizes[d] - 1, 0), strides[d], &reach) ||
          __builtin_add_overflow(last, reach, &last))
        fail("tensor exceeds its storage");
    }
    if (offset < 0 || (!empty && last >= storage.numel())) fail("tensor exceeds its storage");
    auto t = torch::empty({0}, storage.options());
    t.set_(storage.storage(), storage.storage_offset() + offset, sizes, strides);
    auto o = make(PyObject::Kind::kTensor);
    o->tensor = t;
    return o;
  }

  PyRef reduce(const PyRef& callable, const PyRef& args) {
    const std::string& name = callable->s;
    if (callable->kind == PyObject::Kind::kGlobal && args->kind == PyObject::Kind::kTuple) {
      if (name == "collections.OrderedDict") return make(PyObject::Kind::kDict);
      // LibTorch's own pickler (torch::pickle_save) tags typed containers.
      if (name.rfind("torch.jit._pickle.", 0) == 0 && !args->items.empty()) {
        return args->items[0];
      }
      if (name == "torch._utils._rebuild_tensor_v2" || name == "torch._utils._rebuild_tensor") {
        return rebuild_tensor(args->items);
      }
      if (name == "torch._utils._rebuild_parameter" ||
          name == "torch._utils._rebuild_parameter_with_state") {
        if (args->items.empty() || args->items[0]->kind != PyObject::Kind::kTensor) {
          fail("unexpected parameter arguments");
        }
        return args->items[0];
      }
    }
    refuse(callable);
  }

  // Tensors and plain containers need only the calls above; a file that asks for any
  // other (an optimizer class, an argparse namespace, os.system) is refused whole,
  // as torch.load(weights_only=True) refuses it.
  [[noreturn]] void refuse(const PyRef& callable) const {
    const std::string what =
        callable->kind == PyObject::Kind::kGlobal ? "'" + callable->s + "'" : "a computed callable";
    throw FormatError(source_ + ": refused: the file calls " + what +
                      "; tlcore reads only tensors and plain containers (no code runs)");
  }

  PickleInput& in_;
  const StorageLoader& load_;
  const std::string& source_;
  // The result is built as a tree: a container sits in at most one container, never
  // inside itself, at most kMaxDepth deep. Shared or cyclic containers would leak
  // (shared_ptr cycles) and make every reader of the result recurse without end.
  static bool is_container(const PyObject& o) {
    return o.kind == PyObject::Kind::kTuple || o.kind == PyObject::Kind::kList ||
           o.kind == PyObject::Kind::kDict;
  }
  void adopt(const PyObject& container, const PyRef& item) {
    if (!is_container(*item)) return;
    if (parent_.count(item.get())) fail("a container appears twice (shared or cyclic data)");
    // The heights on the way up grow with the new child; the walk also finds a cycle.
    size_t height = height_of(item.get()) + 1;
    for (const PyObject* p = &container; p != nullptr; p = parent_of(p), ++height) {
      if (p == item.get()) fail("a container inside itself");
      if (height > kMaxDepth) fail("containers nested deeper than " + std::to_string(kMaxDepth));
      if (height_of(p) >= height) break;
      height_[p] = height;
    }
    parent_[item.get()] = &container;
  }
  void adopt_all(const PyObject& container, const std::vector<PyRef>& items) {
    for (const auto& item : items) adopt(container, item);
  }
  // A call's arguments are used up: what it returns (e.g. its first argument) is free to
  // sit elsewhere, and the emptied tuple can no longer share it.
  void consume(PyObject& args) {
    for (const auto& item : args.items) {
      auto it = parent_.find(item.get());
      if (it != parent_.end() && it->second == &args) parent_.erase(it);
    }
    args.items.clear();
  }
  const PyObject* parent_of(const PyObject* o) const {
    auto it = parent_.find(o);
    return it == parent_.end() ? nullptr : it->second;
  }
  size_t height_of(const PyObject* o) const {
    auto it = height_.find(o);
    return it == height_.end() ? 1 : it->second;
  }

  static constexpr size_t kMaxDepth = 1000;
  // Far above any module and class name a checkpoint needs ("torch._utils._rebuild_tensor_v2").
  static constexpr size_t kMaxGlobalName = 4096;
  std::unordered_map<const PyObject*, const PyObject*> parent_;
  std::unordered_map<const PyObject*, size_t> height_;
  std::vector<PyRef> stack_;
  std::vector<size_t> marks_;
  std::unordered_map<uint64_t, PyRef> memo_;
};

}  // namespace

PyRef unpickle(PickleInput& in, const StorageLoader& load_storage, const std::string& source) {
  return Machine(in, load_storage, source).run();
}

const PyRef* dict_entry(const PyRef& dict, const std::string& key) {
  if (dict->kind != PyObject::Kind::kDict) return nullptr;
  for (size_t k = 0; k + 1 < dict->items.size(); k += 2)
    if (dict->items[k]->kind == PyObject::Kind::kString && dict->items[k]->s == key)
      return &dict->items[k + 1];
  return nullptr;
}

}  // namespace tlcore::models::detail
