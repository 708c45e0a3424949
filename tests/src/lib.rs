//! System tests of the whole of flexdisk against the simulators. Not built yet (issue #8); the
//! simulator's own tests live in `sim/tests/`.
