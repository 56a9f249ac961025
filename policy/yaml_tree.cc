#include "policy/yaml_tree.h"

#include <yaml-cpp/eventhandler.h>
#include <yaml-cpp/yaml.h>

#include <istream>
#include <streambuf>

#include "absl/container/flat_hash_map.h"

namespace portcullis::policy {

bool YamlNode::IsNull() const { return tree_->nodes_[id_].kind == YamlTree::Kind::kNull; }
bool YamlNode::IsScalar() const { return tree_->nodes_[id_].kind == YamlTree::Kind::kScalar; }
bool YamlNode::IsSequence() const { return tree_->nodes_[id_].kind == YamlTree::Kind::kSequence; }
bool YamlNode::IsMap() const { return tree_->nodes_[id_].kind == YamlTree::Kind::kMap; }

absl::string_view YamlNode::Scalar() const {
  const YamlTree::Node& n = tree_->nodes_[id_];
  if (n.kind != YamlTree::Kind::kScalar) return {};
  return absl::string_view(tree_->arena_).substr(n.first, n.count);
}

SourceLocation YamlNode::Mark() const {
  const YamlTree::Node& n = tree_->nodes_[id_];
  return SourceLocation{static_cast<int>(n.line), static_cast<int>(n.column)};
}

size_t YamlNode::size() const {
  const YamlTree::Node& n = tree_->nodes_[id_];
  if (n.kind == YamlTree::Kind::kSequence) return n.count;
  if (n.kind == YamlTree::Kind::kMap) return n.count / 2;
  return 0;
}

YamlNode YamlNode::operator[](size_t i) const {
  return YamlNode(tree_, tree_->children_[tree_->nodes_[id_].first + i]);
}
YamlNode YamlNode::key(size_t i) const {
  return YamlNode(tree_, tree_->children_[tree_->nodes_[id_].first + 2 * i]);
}
YamlNode YamlNode::value(size_t i) const {
  return YamlNode(tree_, tree_->children_[tree_->nodes_[id_].first + 2 * i + 1]);
}

// Builds the tree from one document's events: a container's children are
// collected while it is open and appended to children_ when it closes.
struct StopParsing {};

SourceLocation At(const YAML::Mark& mark) { return {mark.line + 1, mark.column + 1}; }

class TreeBuilder : public YAML::EventHandler {
 public:
  TreeBuilder(YamlTree& tree, uint64_t max_alias_nodes)
      : tree_(tree), max_alias_nodes_(max_alias_nodes) {
    tree_.nodes_.push_back({YamlTree::Kind::kNull, 1, 1, 0, 0});  // the empty document
  }

  void OnDocumentStart(const YAML::Mark&) override {}
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    Add(New(YamlTree::Kind::kNull, mark, 0, 0), anchor, 1);
  }
  void OnAlias(const YAML::Mark& mark, YAML::anchor_t anchor) override {
    const auto it = anchors_.find(anchor);
    const uint64_t size = it == anchors_.end() ? 1 : it->second.size;
    alias_nodes_ += size;
    if (alias_nodes_ > max_alias_nodes_) {
      tree_.alias_limit_ = At(mark);
      throw StopParsing{};
    }
    Add(it == anchors_.end() ? 0 : it->second.id, 0, size);
  }
  void OnScalar(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                const std::string& value) override {
    const auto at = static_cast<uint32_t>(tree_.arena_.size());
    tree_.arena_.append(value);
    Add(New(YamlTree::Kind::kScalar, mark, at, static_cast<uint32_t>(value.size())), anchor, 1);
  }
  void OnSequenceStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                       YAML::EmitterStyle::value) override {
    Open(YamlTree::Kind::kSequence, mark, anchor);
  }
  void OnSequenceEnd() override { Close(); }
  void OnMapStart(const YAML::Mark& mark, const std::string&, YAML::anchor_t anchor,
                  YAML::EmitterStyle::value) override {
    Open(YamlTree::Kind::kMap, mark, anchor);
  }
  void OnMapEnd() override { Close(); }

 private:
  uint32_t New(YamlTree::Kind kind, const YAML::Mark& mark, uint32_t first, uint32_t count) {
    tree_.nodes_.push_back({kind, static_cast<uint32_t>(mark.line + 1),
                            static_cast<uint32_t>(mark.column + 1), first, count});
    return static_cast<uint32_t>(tree_.nodes_.size() - 1);
  }
  // A finished node: the root, or the open container's next child. `size`
  // is the nodes a walk visits under it, aliases expanded.
  void Add(uint32_t id, YAML::anchor_t anchor, uint64_t size) {
    if (anchor) anchors_[anchor] = {id, size};
    if (open_.empty()) {
      tree_.root_ = id;
    } else {
      open_.back().children.push_back(id);
      open_.back().size += size;
    }
  }
  void Open(YamlTree::Kind kind, const YAML::Mark& mark, YAML::anchor_t anchor) {
    open_.push_back({New(kind, mark, 0, 0), anchor, 1, {}});
  }
  void Close() {
    Frame frame = std::move(open_.back());
    open_.pop_back();
    YamlTree::Node& n = tree_.nodes_[frame.id];
    n.first = static_cast<uint32_t>(tree_.children_.size());
    n.count = static_cast<uint32_t>(frame.children.size());
    tree_.children_.insert(tree_.children_.end(), frame.children.begin(), frame.children.end());
    Add(frame.id, frame.anchor, frame.size);
  }

  struct Frame {
    uint32_t id;
    YAML::anchor_t anchor;
    uint64_t size;  // this node and what is under it
    std::vector<uint32_t> children;
  };
  struct Anchored {
    uint32_t id;
    uint64_t size;
  };
  YamlTree& tree_;
  const uint64_t max_alias_nodes_;
  uint64_t alias_nodes_ = 0;
  std::vector<Frame> open_;
  absl::flat_hash_map<YAML::anchor_t, Anchored> anchors_;
};

// Notes where the next document starts, and stops there.
class DocumentStart : public YAML::EventHandler {
 public:
  void OnDocumentStart(const YAML::Mark& mark) override {
    at = At(mark);
    throw StopParsing{};
  }
  void OnDocumentEnd() override {}
  void OnNull(const YAML::Mark&, YAML::anchor_t) override {}
  void OnAlias(const YAML::Mark&, YAML::anchor_t) override {}
  void OnScalar(const YAML::Mark&, const std::string&, YAML::anchor_t,
                const std::string&) override {}
  void OnSequenceStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                       YAML::EmitterStyle::value) override {}
  void OnSequenceEnd() override {}
  void OnMapStart(const YAML::Mark&, const std::string&, YAML::anchor_t,
                  YAML::EmitterStyle::value) override {}
  void OnMapEnd() override {}
  std::optional<SourceLocation> at;
};

// The text as an input stream, without a copy of it.
class ViewBuffer : public std::streambuf {
 public:
  explicit ViewBuffer(absl::string_view text) {
    char* p = const_cast<char*>(text.data());  // only ever read
    setg(p, p, p + text.size());
  }
};

YamlTree YamlTree::Parse(absl::string_view text, uint64_t max_alias_nodes) {
  YamlTree tree;
  ViewBuffer buffer(text);
  std::istream stream(&buffer);
  YAML::Parser parser(stream);
  // yaml-cpp unwinds cleanly from an exception thrown by a handler.
  try {
    TreeBuilder builder(tree, max_alias_nodes);
    parser.HandleNextDocument(builder);
  } catch (const StopParsing&) {
    return tree;  // at the alias limit
  }
  DocumentStart next;
  try {
    parser.HandleNextDocument(next);
  } catch (const StopParsing&) {
  }
  tree.second_document_ = next.at;
  return tree;
}

}  // namespace portcullis::policy
