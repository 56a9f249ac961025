// A YAML document as a compact, read-only tree built from yaml-cpp's parser
// events. YAML::Load's nodes cost about 500 bytes each (a blocklist of 1M
// entries took 810 MB to validate); here a node is 20 bytes and the scalars
// share one arena. An alias is the node it names, as in YAML::Load.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/string_view.h"
#include "policy/diagnostics.h"

namespace portcullis::policy {

class YamlTree;

// A node of a YamlTree; valid while the tree is.
class YamlNode {
 public:
  bool IsNull() const;
  bool IsScalar() const;
  bool IsSequence() const;
  bool IsMap() const;
  absl::string_view Scalar() const;     // "" unless a scalar
  SourceLocation Mark() const;          // where it starts, 1-based
  size_t size() const;                  // items of a sequence, pairs of a map, else 0
  YamlNode operator[](size_t i) const;  // item i of a sequence
  YamlNode key(size_t i) const;         // pair i of a map
  YamlNode value(size_t i) const;

 private:
  friend class YamlTree;
  YamlNode(const YamlTree* tree, uint32_t id) : tree_(tree), id_(id) {}
  const YamlTree* tree_;
  uint32_t id_;
};

class YamlTree {
 public:
  // The first document of `text`; a null root when there is none. Throws
  // YAML::Exception (with its mark) on a syntax error, as YAML::Load does.
  // Parsing stops where aliases first reach more than `max_alias_nodes`
  // nodes (alias_limit()): a walk visits an anchored subtree once per alias,
  // so 1 KB of nested aliases would stand for billions of nodes.
  static YamlTree Parse(absl::string_view text, uint64_t max_alias_nodes);

  YamlNode root() const { return YamlNode(this, root_); }
  // Where a second document starts, if the text has one.
  const std::optional<SourceLocation>& second_document() const { return second_document_; }
  const std::optional<SourceLocation>& alias_limit() const { return alias_limit_; }

 private:
  friend class YamlNode;
  friend class TreeBuilder;
  enum class Kind : uint8_t { kNull, kScalar, kSequence, kMap };
  struct Node {
    Kind kind;
    uint32_t line, column;  // 1-based
    uint32_t first, count;  // scalar: arena bytes; container: children_ entries
  };

  std::vector<Node> nodes_;
  std::vector<uint32_t> children_;  // each container's children, contiguous
  std::string arena_;               // every scalar's text
  uint32_t root_ = 0;               // node 0: the null root of an empty document
  std::optional<SourceLocation> second_document_, alias_limit_;
};

}  // namespace portcullis::policy
