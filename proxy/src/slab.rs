//! Slots that keep their index: listeners, clusters and sessions are
//! referred to by index while they live, and a freed index is reused.

/// Slots that keep their index while anything refers to them.
#[derive(Debug)]
pub struct Slab<T> {
    items: Vec<Option<T>>,
    free: Vec<u32>,
}

impl<T> Slab<T> {
    pub fn new() -> Slab<T> {
        Slab {
            items: Vec::new(),
            free: Vec::new(),
        }
    }
    pub fn insert(&mut self, v: T) -> u32 {
        match self.free.pop() {
            Some(k) => {
                self.items[k as usize] = Some(v);
                k
            }
            None => {
                self.items.push(Some(v));
                (self.items.len() - 1) as u32
            }
        }
    }
    pub fn remove(&mut self, k: u32) -> Option<T> {
        let v = self.items.get_mut(k as usize)?.take();
        if v.is_some() {
            self.free.push(k);
        }
        v
    }
    pub fn get(&self, k: u32) -> Option<&T> {
        self.items.get(k as usize)?.as_ref()
    }
    pub fn get_mut(&mut self, k: u32) -> Option<&mut T> {
        self.items.get_mut(k as usize)?.as_mut()
    }
    /// Slots ever used (in use or free): every key is below it.
    pub fn capacity(&self) -> usize {
        self.items.len()
    }
}

impl<T> std::ops::Index<u32> for Slab<T> {
    type Output = T;
    fn index(&self, k: u32) -> &T {
        self.get(k).expect("slot in use")
    }
}

impl<T> std::ops::IndexMut<u32> for Slab<T> {
    fn index_mut(&mut self, k: u32) -> &mut T {
        self.get_mut(k).expect("slot in use")
    }
}

impl<T> Default for Slab<T> {
    fn default() -> Self {
        Slab::new()
    }
}
