// Command holdfast-ipam is a CNI IPAM plugin that allocates pod addresses
// from host-local style ranges and pins them to the pod's name
// (K8S_POD_NAMESPACE / K8S_POD_NAME from CNI_ARGS, plus network and ifname),
// so a pod that gets a new sandbox — after a DEL, a sandbox crash or an
// offline reboot — gets the same address back.
//
// This file set holds only the CNI verbs (ADD, CHECK, DEL, STATUS, GC); the
// policy lives in allocator/, the on-disk state in store/, configuration
// parsing in config/. It owns <dataDir>/<network>/ and
// <dataDir>/holdfast-ipam.log; it never touches network devices, netns or
// any other file. stdout carries only the CNI result or error.
package main
