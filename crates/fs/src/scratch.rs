//! The in-memory scratch tree: a read-write filesystem that exists only for one run.
//!
//! Nodes live in an arena indexed by inode number rather than behind `Rc`/`Arc` pointers, so
//! that a whole VM's filesystem is one `Send` value with no locks, costs one allocation to
//! create, and is dropped in one go. A node is freed when it has no names left and no open
//! file descriptor refers to it, exactly like an inode. Every byte of file content and every
//! entry is charged against the run's scratch limit; going over fails with ENOSPC.

use std::collections::BTreeMap;

use crate::types::{Errno, Filetype};

/// What one node (file, directory or symbolic link) costs against the scratch limit, besides
/// its content: a rough size of its bookkeeping, so that millions of empty files are not free.
pub const NODE_COST: u64 = 128;

/// The inode number of the scratch root.
pub const ROOT: u32 = 0;

#[derive(Debug)]
pub enum Data {
    Dir(BTreeMap<String, u32>),
    File(Vec<u8>),
    Symlink(String),
}

#[derive(Debug)]
pub struct Node {
    pub data: Data,
    /// Names referring to this node.
    pub nlink: u32,
    /// Open file descriptors referring to this node.
    pub open: u32,
    pub atim: u64,
    pub mtim: u64,
    pub ctim: u64,
}

impl Node {
    pub fn filetype(&self) -> Filetype {
        match self.data {
            Data::Dir(_) => Filetype::Directory,
            Data::File(_) => Filetype::RegularFile,
            Data::Symlink(_) => Filetype::SymbolicLink,
        }
    }

    pub fn size(&self) -> u64 {
        match &self.data {
            Data::Dir(_) => 0,
            Data::File(d) => d.len() as u64,
            Data::Symlink(t) => t.len() as u64,
        }
    }
}

#[derive(Debug)]
pub struct Scratch {
    nodes: Vec<Option<Node>>,
    free: Vec<u32>,
    used: u64,
    limit: u64,
}

impl Scratch {
    pub fn new(limit: u64, now: u64) -> Scratch {
        let root = Node {
            data: Data::Dir(BTreeMap::new()),
            nlink: 1,
            open: 0,
            atim: now,
            mtim: now,
            ctim: now,
        };
        Scratch {
            nodes: vec![Some(root)],
            free: Vec::new(),
            used: NODE_COST,
            limit,
        }
    }

    /// Writes the tree under directory `dir` as a tar archive, deterministically: entries in
    /// name order, directories before their contents, owner 0, fixed modes (0755 directories,
    /// 0644 files), and the virtual clock's modification times, so the same run writes the
    /// same bytes. A file with several names is written once per name.
    pub fn write_tar(&self, dir: u32, out: &mut dyn std::io::Write) -> std::io::Result<()> {
        let mut builder = tar::Builder::new(out);
        self.tar_dir(&mut builder, dir, "")?;
        builder.into_inner()?.flush()
    }

    fn tar_dir(
        &self,
        builder: &mut tar::Builder<&mut dyn std::io::Write>,
        dir: u32,
        prefix: &str,
    ) -> std::io::Result<()> {
        let Data::Dir(entries) = &self.get(dir).data else {
            return Ok(());
        };
        for (name, &id) in entries {
            let node = self.get(id);
            let path = format!("{prefix}{name}");
            let mut header = tar::Header::new_gnu();
            header.set_uid(0);
            header.set_gid(0);
            header.set_mtime(node.mtim / 1_000_000_000);
            match &node.data {
                Data::Dir(_) => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(0o755);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{path}/"), std::io::empty())?;
                    self.tar_dir(builder, id, &format!("{path}/"))?;
                }
                Data::File(bytes) => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(0o644);
                    header.set_size(bytes.len() as u64);
                    builder.append_data(&mut header, &path, bytes.as_slice())?;
                }
                Data::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, &path, target)?;
                }
            }
        }
        Ok(())
    }

    /// Bytes currently charged.
    pub fn used(&self) -> u64 {
        self.used
    }

    pub fn get(&self, id: u32) -> &Node {
        self.nodes[id as usize]
            .as_ref()
            .expect("scratch node referenced after it was freed")
    }

    pub fn get_mut(&mut self, id: u32) -> &mut Node {
        self.nodes[id as usize]
            .as_mut()
            .expect("scratch node referenced after it was freed")
    }

    /// Charges `bytes` more, or fails with ENOSPC leaving the charge unchanged.
    pub fn charge(&mut self, bytes: u64) -> Result<(), Errno> {
        let total = self.used.checked_add(bytes).ok_or(Errno::Nospc)?;
        if total > self.limit {
            return Err(Errno::Nospc);
        }
        self.used = total;
        Ok(())
    }

    pub fn refund(&mut self, bytes: u64) {
        self.used = self.used.saturating_sub(bytes);
    }

    /// Looks `name` up in directory `dir`.
    pub fn lookup(&self, dir: u32, name: &str) -> Option<u32> {
        match &self.get(dir).data {
            Data::Dir(entries) => entries.get(name).copied(),
            _ => None,
        }
    }

    /// Creates a node and links it as `name` in `dir` (which must not have `name`).
    pub fn create(&mut self, dir: u32, name: &str, data: Data, now: u64) -> Result<u32, Errno> {
        let content = match &data {
            Data::Symlink(t) => t.len() as u64,
            _ => 0,
        };
        self.charge(NODE_COST + name.len() as u64 + content)?;
        let node = Node {
            data,
            nlink: 1,
            open: 0,
            atim: now,
            mtim: now,
            ctim: now,
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.nodes[id as usize] = Some(node);
                id
            }
            None => {
                self.nodes.push(Some(node));
                (self.nodes.len() - 1) as u32
            }
        };
        self.insert_entry(dir, name, id, now);
        Ok(id)
    }

    fn insert_entry(&mut self, dir: u32, name: &str, id: u32, now: u64) {
        let parent = self.get_mut(dir);
        if let Data::Dir(entries) = &mut parent.data {
            entries.insert(name.to_string(), id);
        }
        parent.mtim = now;
        parent.ctim = now;
    }

    /// Adds another name for `id` (a hard link).
    pub fn link(&mut self, dir: u32, name: &str, id: u32, now: u64) -> Result<(), Errno> {
        self.charge(name.len() as u64)?;
        self.insert_entry(dir, name, id, now);
        let node = self.get_mut(id);
        node.nlink += 1;
        node.ctim = now;
        Ok(())
    }

    /// Removes the name `name` from `dir`; frees the node if nothing refers to it any more.
    pub fn unlink(&mut self, dir: u32, name: &str, now: u64) {
        let parent = self.get_mut(dir);
        let removed = match &mut parent.data {
            Data::Dir(entries) => entries.remove(name),
            _ => None,
        };
        parent.mtim = now;
        parent.ctim = now;
        self.refund(name.len() as u64);
        if let Some(id) = removed {
            let node = self.get_mut(id);
            node.nlink -= 1;
            node.ctim = now;
            if let Data::Dir(entries) = &mut node.data {
                // A removed directory is empty (rmdir checks) and must stay so.
                entries.clear();
                node.nlink = 0;
            }
            self.release_if_unused(id);
        }
    }

    /// Moves an entry; `to_name` in `to_dir` must not exist (the caller unlinks it first).
    pub fn rename(
        &mut self,
        from_dir: u32,
        from_name: &str,
        to_dir: u32,
        to_name: &str,
        now: u64,
    ) -> Result<(), Errno> {
        if to_name.len() > from_name.len() {
            self.charge((to_name.len() - from_name.len()) as u64)?;
        } else {
            self.refund((from_name.len() - to_name.len()) as u64);
        }
        let id = match &mut self.get_mut(from_dir).data {
            Data::Dir(entries) => entries.remove(from_name).ok_or(Errno::Noent)?,
            _ => return Err(Errno::Notdir),
        };
        let from = self.get_mut(from_dir);
        from.mtim = now;
        from.ctim = now;
        self.insert_entry(to_dir, to_name, id, now);
        self.get_mut(id).ctim = now;
        Ok(())
    }

    pub fn opened(&mut self, id: u32) {
        self.get_mut(id).open += 1;
    }

    pub fn closed(&mut self, id: u32) {
        let node = self.get_mut(id);
        node.open -= 1;
        self.release_if_unused(id);
    }

    /// Whether `id` was removed from the tree (an open directory that was deleted).
    pub fn is_removed(&self, id: u32) -> bool {
        id != ROOT && self.get(id).nlink == 0
    }

    fn release_if_unused(&mut self, id: u32) {
        let node = self.get(id);
        if node.nlink == 0 && node.open == 0 && id != ROOT {
            let freed = NODE_COST
                + match &node.data {
                    Data::File(d) => d.len() as u64,
                    Data::Symlink(t) => t.len() as u64,
                    Data::Dir(_) => 0,
                };
            self.nodes[id as usize] = None;
            self.free.push(id);
            self.refund(freed);
        }
    }

    /// Reads file content at `offset`.
    pub fn read_at(&self, id: u32, offset: u64, buf: &mut [u8]) -> Result<usize, Errno> {
        match &self.get(id).data {
            Data::File(d) => {
                let start = (offset.min(d.len() as u64)) as usize;
                let n = buf.len().min(d.len() - start);
                buf[..n].copy_from_slice(&d[start..start + n]);
                Ok(n)
            }
            Data::Dir(_) => Err(Errno::Isdir),
            Data::Symlink(_) => Err(Errno::Inval),
        }
    }

    /// Writes file content at `offset`, growing the file (with zeros) as needed.
    pub fn write_at(
        &mut self,
        id: u32,
        offset: u64,
        data: &[u8],
        now: u64,
    ) -> Result<usize, Errno> {
        let end = offset.checked_add(data.len() as u64).ok_or(Errno::Fbig)?;
        let len = self.get(id).size();
        if end > len {
            self.charge(end - len)?;
        }
        let node = self.get_mut(id);
        let Data::File(d) = &mut node.data else {
            return Err(Errno::Isdir);
        };
        if end as usize > d.len() {
            d.resize(end as usize, 0);
        }
        d[offset as usize..end as usize].copy_from_slice(data);
        node.mtim = now;
        node.ctim = now;
        Ok(data.len())
    }

    /// Sets a file's size.
    pub fn set_size(&mut self, id: u32, size: u64, now: u64) -> Result<(), Errno> {
        let len = self.get(id).size();
        if !matches!(self.get(id).data, Data::File(_)) {
            return Err(Errno::Isdir);
        }
        if size > len {
            self.charge(size - len)?;
        } else {
            self.refund(len - size);
        }
        let node = self.get_mut(id);
        if let Data::File(d) = &mut node.data {
            d.resize(size as usize, 0);
            d.shrink_to(d.len().max(64));
        }
        node.mtim = now;
        node.ctim = now;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_charged_and_freed() {
        let mut s = Scratch::new(10_000, 0);
        let base = s.used();
        let f = s.create(ROOT, "f", Data::File(Vec::new()), 1).unwrap();
        s.write_at(f, 0, &[1; 100], 2).unwrap();
        assert_eq!(s.used(), base + NODE_COST + 1 + 100);
        s.opened(f);
        s.unlink(ROOT, "f", 3);
        assert_eq!(s.get(f).size(), 100, "still open, still there");
        s.closed(f);
        assert_eq!(s.used(), base);
        assert!(s.write_at(ROOT, 0, &[0; 1], 4).is_err());
    }

    #[test]
    fn limit_gives_enospc() {
        let mut s = Scratch::new(1_000, 0);
        let f = s.create(ROOT, "f", Data::File(Vec::new()), 1).unwrap();
        assert_eq!(s.write_at(f, 0, &[0; 2_000], 1), Err(Errno::Nospc));
        assert_eq!(s.get(f).size(), 0);
        assert_eq!(s.set_size(f, 5_000, 1), Err(Errno::Nospc));
    }
}
