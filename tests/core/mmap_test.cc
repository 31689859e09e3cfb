#include "core/mmap.h"

#include <cstdio>
#include <fstream>
#include <string>

#include <gtest/gtest.h>

namespace facet {
namespace {

TEST(MmapTest, MapsFileContents) {
  std::string path = ::testing::TempDir() + "/facet_mmap_test.bin";
  {
    std::ofstream out(path, std::ios::binary);
    out << "hello facet";
  }
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok()) << f.status();
  EXPECT_EQ(f->size(), 11u);
  EXPECT_EQ(std::string(reinterpret_cast<const char*>(f->data()), f->size()), "hello facet");
  MappedFile moved = std::move(*f);
  EXPECT_EQ(moved.size(), 11u);
  EXPECT_EQ(*ReadFileToString(path), "hello facet");
  std::remove(path.c_str());
}

TEST(MmapTest, MissingFileIsNotFoundAndNamed) {
  auto f = MappedFile::Open("/nonexistent/facet.bin");
  EXPECT_EQ(f.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(f.status().message().find("/nonexistent/facet.bin"), std::string::npos);
  EXPECT_FALSE(ReadFileToString("/nonexistent/facet.txt").ok());
  EXPECT_FALSE(MappedFile::Open("/tmp").ok());  // a directory
}

TEST(MmapTest, EmptyFile) {
  std::string path = ::testing::TempDir() + "/facet_mmap_empty.bin";
  { std::ofstream out(path, std::ios::binary); }
  auto f = MappedFile::Open(path);
  ASSERT_TRUE(f.ok());
  EXPECT_EQ(f->size(), 0u);
  std::remove(path.c_str());
}

}  // namespace
}  // namespace facet
