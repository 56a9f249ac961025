
admin*Push2okR	sha256:00
J	sha256:00