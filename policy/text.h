// A policy written back as text: the YAML of PRODUCT.md (what the agent keeps
// as last-known-good and `portcullisctl get` prints), one-line rule texts for
// diffs and refusals, and the content hash that names a policy everywhere.
#pragma once

#include <string>

#include "absl/strings/string_view.h"
#include "portcullis/v1/policy.pb.h"

namespace portcullis::policy {

// YAML that ParsePolicyYaml reads back into an equal proto.
std::string ToYaml(const v1::Policy& policy);

// "tcp 80,443,30000-32767 from [office] synRate 10/20"
std::string RuleText(const v1::PortRule& rule);

// "sha256:" + the hex SHA-256 of `bytes`: how Portcullis writes every hash.
std::string Sha256Label(absl::string_view bytes);

// "sha256:" + hex of the policy's deterministic protobuf encoding. Equal
// policies have equal hashes in every binary of one build.
std::string ContentHash(const v1::Policy& policy);

}  // namespace portcullis::policy
