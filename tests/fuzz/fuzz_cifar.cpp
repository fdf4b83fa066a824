// CIFAR-10/100 binary batches and their class-name files.
// Input: 1 byte (bit 0: CIFAR-100, bit 1: coarse labels, bit 2: a names file),
// a 16-bit length and that many bytes of the names file, then the batch.
#include <cstddef>
#include <cstdint>
#include <filesystem>

#include "fuzz_dataset.h"
#include "fuzz_input.h"
#include "tlcore/data/sources.h"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  tlcore::fuzz::Input in(data, size);
  const std::uint8_t mode = in.byte();
  const bool cifar100 = mode & 1;
  const std::size_t names_size = in.length();
  const auto* names = in.take(names_size);
  const auto dir = std::string(cifar100 ? "c100/" : "c10/");
  const char* names_file = cifar100 ? (mode & 2 ? "coarse_label_names.txt" : "fine_label_names.txt")
                                    : "batches.meta.txt";
  std::filesystem::remove(tlcore::fuzz::scratch() / dir / names_file);
  if (mode & 4) tlcore::fuzz::write_file(dir + names_file, names, names_size);
  const auto path = tlcore::fuzz::write_file(dir + (cifar100 ? "train.bin" : "data_batch_1.bin"),
                                             in.data(), in.size());
  try {
    const auto label = mode & 2 ? tlcore::CifarLabel::kCoarse : tlcore::CifarLabel::kFine;
    tlcore::fuzz::read_all(*tlcore::open_cifar(path, true, label));
  } catch (const tlcore::Error&) {
  }
  return 0;
}
