//! Every tick: the data directory's free space is probed again, and idle
//! partitions' files are released when the shard holds more than its
//! budget.

use crate::node::Shard;

pub fn tick(shard: &Shard) {
    shard.disk.refresh();
    shard.check_files();
}
