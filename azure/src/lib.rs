//! Everything flexdisk says to Azure. Not built yet (issue #3).
