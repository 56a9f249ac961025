// The installer's minimal diff between two map images, without a kernel:
// which keys are deleted and which records written.
#include "datapath/map_image.h"

#include <cstdint>
#include <cstring>
#include <map>
#include <utility>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace portcullis::datapath {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;
using Records = std::vector<std::pair<uint32_t, uint16_t>>;

MapImage Image(const Records& records) {
  MapImage image(sizeof(uint32_t), sizeof(uint16_t));
  for (const auto& [key, value] : records) image.Add(&key, &value);
  image.Sort();
  return image;
}

std::vector<uint32_t> Keys(const MapImage& image) {
  std::vector<uint32_t> keys;
  for (size_t i = 0; i < image.size(); ++i) {
    uint32_t k;
    std::memcpy(&k, image.key(i), sizeof(k));
    keys.push_back(k);
  }
  return keys;
}

Records RecordsOf(const MapImage& image) {
  Records out;
  for (size_t i = 0; i < image.size(); ++i) {
    uint32_t k;
    uint16_t v;
    std::memcpy(&k, image.key(i), sizeof(k));
    std::memcpy(&v, image.value(i), sizeof(v));
    out.emplace_back(k, v);
  }
  return out;
}

TEST(MapImageTest, SortOrdersRecordsByKeyBytesAndKeepsTheirValues) {
  const MapImage image = Image({{0x0300, 3}, {0x0100, 1}, {0x0200, 2}});
  // Little-endian keys sort by their bytes: 0x0100 < 0x0200 < 0x0300.
  EXPECT_EQ(RecordsOf(image), (Records{{0x0100, 1}, {0x0200, 2}, {0x0300, 3}}));
}

TEST(MapImageTest, EqualImagesNeedNoWrite) {
  const MapImage a = Image({{1, 10}, {2, 20}});
  const ImageDiff diff = DiffImages(a, Image({{2, 20}, {1, 10}}));
  EXPECT_THAT(Keys(diff.deletes), IsEmpty());
  EXPECT_THAT(RecordsOf(diff.updates), IsEmpty());
}

TEST(MapImageTest, KeysOnlyInTheCurrentImageAreDeleted) {
  const ImageDiff diff = DiffImages(Image({{1, 10}, {2, 20}, {3, 30}}), Image({{2, 20}}));
  EXPECT_THAT(Keys(diff.deletes), ElementsAre(1u, 3u));
  EXPECT_THAT(RecordsOf(diff.updates), IsEmpty());
}

TEST(MapImageTest, NewKeysAndChangedValuesAreWrittenAndNothingElse) {
  const ImageDiff diff =
      DiffImages(Image({{1, 10}, {2, 20}, {4, 40}}), Image({{1, 10}, {2, 21}, {3, 30}}));
  EXPECT_THAT(Keys(diff.deletes), ElementsAre(4u));
  EXPECT_EQ(RecordsOf(diff.updates), (Records{{2, 21}, {3, 30}}));
}

TEST(MapImageTest, FromEmptyEverythingIsWrittenAndToEmptyEverythingDeleted) {
  const MapImage full = Image({{5, 50}, {6, 60}});
  const MapImage empty = Image({});
  const ImageDiff fill = DiffImages(empty, full);
  EXPECT_THAT(Keys(fill.deletes), IsEmpty());
  EXPECT_EQ(RecordsOf(fill.updates), (Records{{5, 50}, {6, 60}}));
  const ImageDiff clear = DiffImages(full, empty);
  EXPECT_THAT(Keys(clear.deletes), ElementsAre(5u, 6u));
  EXPECT_THAT(RecordsOf(clear.updates), IsEmpty());
}

// Applying the diff to the current image gives the target, for images that
// interleave in every way (a model check of the merge).
TEST(MapImageTest, ApplyingTheDiffToCurrentGivesTheTarget) {
  for (uint32_t seed = 1; seed < 200; ++seed) {
    Records cur, tgt;
    uint32_t x = seed;
    for (uint32_t k = 0; k < 40; ++k) {
      x = x * 1103515245 + 12345;
      if (x & 1) cur.emplace_back(k, static_cast<uint16_t>(x >> 8));
      if (x & 2) tgt.emplace_back(k, static_cast<uint16_t>((x & 4) ? x >> 8 : x >> 12));
    }
    const ImageDiff diff = DiffImages(Image(cur), Image(tgt));
    std::map<uint32_t, uint16_t> applied(cur.begin(), cur.end());
    for (uint32_t k : Keys(diff.deletes)) applied.erase(k);
    for (const auto& [k, v] : RecordsOf(diff.updates)) applied[k] = v;
    EXPECT_EQ(Records(applied.begin(), applied.end()), RecordsOf(Image(tgt))) << "seed " << seed;
    // Minimal: every update differs from what was there.
    std::map<uint32_t, uint16_t> before(cur.begin(), cur.end());
    for (const auto& [k, v] : RecordsOf(diff.updates)) {
      auto it = before.find(k);
      EXPECT_TRUE(it == before.end() || it->second != v) << "seed " << seed << " key " << k;
    }
  }
}

}  // namespace
}  // namespace portcullis::datapath
