# Copies one of etcd's .proto files with its gogoproto and HTTP-gateway
# annotations removed: they serve etcd's Go build and its JSON gateway, and
# protoc cannot resolve them without Go's sources. What remains is the wire
# contract, unchanged. Run as: cmake -DIN=... -DOUT=... -P this file.
file(READ "${IN}" text)
string(REGEX REPLACE "import \"gogoproto/gogo.proto\";" "" text "${text}")
string(REGEX REPLACE "import \"google/api/annotations.proto\";" "" text "${text}")
string(REGEX REPLACE "option \\(gogoproto\\.[a-z_]+\\) = [a-z]+;" "" text "${text}")
# option (google.api.http) = { post: "..." additional_bindings { ... } };
# (at most one level of nested braces, as etcd writes them)
string(REGEX REPLACE "option \\(google\\.api\\.http\\) = {([^{}]|{[^{}]*})*};" "" text
  "${text}")
# Field options such as [(gogoproto.nullable) = false].
string(REGEX REPLACE " *\\[\\(gogoproto\\.[^]]*\\]" "" text "${text}")
if(text MATCHES "gogoproto|google\\.api")
  message(FATAL_ERROR "${IN}: an annotation this script does not know remains")
endif()
file(WRITE "${OUT}" "${text}")
