// The one map every screen shares (Leaflet 1.9, from npm). Pets are small DOM markers that
// carry data-tracker-id; trails, history tracks and zones are vector layers (trails and tracks
// on one canvas, so a thousand of them are one element). Updates come once per animation frame
// from the store.

import { h } from './dom.js';
import { petName } from './format.js';

/* global L */

const GEOMAN_JS = '/vendor/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.min.js';
const GEOMAN_CSS = '/vendor/@geoman-io/leaflet-geoman-free/dist/leaflet-geoman.css';

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('script');
    el.src = src;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`cannot load ${src}`));
    document.head.appendChild(el);
  });
}

function loadStyle(href) {
  return new Promise((resolve, reject) => {
    const el = document.createElement('link');
    el.rel = 'stylesheet';
    el.href = href;
    el.onload = resolve;
    el.onerror = () => reject(new Error(`cannot load ${href}`));
    document.head.appendChild(el);
  });
}

let geoman = null;

const TRAILS_FOR_ALL = 100;

/** A div icon whose element carries the pet's tracker id (tests and the list find markers by it). */
const PetIcon = L.DivIcon.extend({
  createIcon(old) {
    const div = L.DivIcon.prototype.createIcon.call(this, old);
    div.dataset.trackerId = this.options.trackerId;
    div.dataset.testid = 'pet-marker';
    return div;
  },
});

function petIcon(pet) {
  const name = petName(pet);
  const label = h('span', { class: 'pet-label' }, name);
  const dot = h('span', { class: 'pet-dot' }, name.slice(0, 1).toUpperCase() || '?');
  return new PetIcon({
    className: 'pet-marker',
    html: h('span', { class: 'pet-pin' }, dot, label),
    iconSize: [28, 28],
    iconAnchor: [14, 14],
    trackerId: pet.id,
  });
}

export class MapView {
  constructor(el, settings) {
    this.el = el;
    this.map = L.map(el, {
      zoomControl: true,
      preferCanvas: true,
      worldCopyJump: true,
      maxZoom: settings.max_zoom || 19,
      zoomSnap: 0.5,
    }).setView([20, 0], 2);
    this.canvas = L.canvas({ padding: 0.3 });
    this.svg = L.svg();
    if (settings.tile_url) {
      L.tileLayer(settings.tile_url, {
        attribution: settings.tile_attribution || '',
        maxZoom: settings.max_zoom || 19,
        crossOrigin: false,
      }).addTo(this.map);
    } else {
      el.classList.add('no-basemap');
      // Without tiles the map still says what it is drawn on.
      this.map.attributionControl.addAttribution('No basemap configured (map.tile_url)');
    }
    this.map.attributionControl.setPrefix('<a href="https://leafletjs.com">Leaflet</a>');
    this.markers = new Map(); // id -> L.Marker
    this.trails = new Map(); // id -> L.Polyline
    this.petsVisible = true;
    this.selected = null;
    this.follow = false;
    this.track = null;
    this.playback = null;
    this.zoneLayers = new Map(); // zone id -> layer
    this.onPetClick = null;
    this.fitted = false;
  }

  /**
   * Trails for every pet while there are few; beyond TRAILS_FOR_ALL only the selected pet's,
   * which is also all a person can follow among hundreds.
   */
  trailShown(id) {
    return this.petsVisible && (this.markers.size <= TRAILS_FOR_ALL || id === this.selected);
  }

  syncTrail(id) {
    const trail = this.trails.get(id);
    if (!trail) return;
    const want = this.trailShown(id);
    const has = this.map.hasLayer(trail);
    if (want && !has) trail.addTo(this.map);
    else if (!want && has) trail.remove();
  }

  invalidate() {
    this.map.invalidateSize({ pan: false });
  }

  /**
   * Runs a change of view now, or when the zoom animation in progress ends: Leaflet drops a
   * setView asked for during one (a zone's "Show" right after the screen fitted all zones).
   */
  view(change) {
    if (this.map._animatingZoom) this.map.once('zoomend', () => change());
    else change();
  }

  // --- pets ------------------------------------------------------------------------------

  /** Creates and removes markers to match the pets (names and roles may have changed). */
  setPets(pets) {
    for (const [id, marker] of this.markers) {
      if (!pets.has(id)) {
        marker.remove();
        this.markers.delete(id);
        const trail = this.trails.get(id);
        if (trail) trail.remove();
        this.trails.delete(id);
      }
    }
    for (const pet of pets.values()) {
      const marker = this.markers.get(pet.id);
      if (marker) {
        if (marker.petName !== petName(pet)) {
          marker.setIcon(petIcon(pet));
          marker.petName = petName(pet);
          this.styleMarker(pet);
        }
        continue;
      }
      if (!pet.fix) continue;
      this.addMarker(pet);
    }
    for (const id of this.trails.keys()) this.syncTrail(id);
    if (!this.fitted) this.fitPets(pets);
  }

  addMarker(pet) {
    const marker = L.marker([pet.fix.lat, pet.fix.lon], {
      icon: petIcon(pet),
      // The list is the keyboard's way to a pet: a thousand tab stops on the map would not be.
      keyboard: false,
      title: petName(pet),
      riseOnHover: true,
    });
    marker.petName = petName(pet);
    marker.on('click', () => this.onPetClick && this.onPetClick(pet.id));
    if (this.petsVisible) marker.addTo(this.map);
    this.markers.set(pet.id, marker);
    const trail = L.polyline(pet.trail.map((p) => [p[0], p[1]]), {
      renderer: this.canvas,
      interactive: false,
      weight: 3,
      opacity: 0.55,
      color: '#1f6f5c',
    });
    this.trails.set(pet.id, trail);
    this.syncTrail(pet.id);
    this.styleMarker(pet);
  }

  styleMarker(pet) {
    const marker = this.markers.get(pet.id);
    const el = marker && marker.getElement();
    if (!el) return;
    el.classList.toggle('offline', !pet.online);
    el.classList.toggle('selected', this.selected === pet.id);
    el.classList.toggle('stale', !pet.online && pet.fix && Date.now() - Date.parse(pet.fix.ts) > 3600e3);
  }

  /** Moves the markers of the pets updated in this frame. */
  updatePets(pets, ids) {
    for (const id of ids) {
      const pet = pets.get(id);
      if (!pet || !pet.fix) continue;
      const marker = this.markers.get(id);
      if (!marker) {
        this.addMarker(pet);
        // The first pet with a position: show where it is.
        if (!this.fitted) this.fitPets(pets);
        continue;
      }
      const ll = marker.getLatLng();
      if (ll.lat !== pet.fix.lat || ll.lng !== pet.fix.lon) {
        marker.setLatLng([pet.fix.lat, pet.fix.lon]);
        const trail = this.trails.get(id);
        // A hidden trail is brought up to date when it is shown.
        if (trail && this.trailShown(id)) trail.setLatLngs(pet.trail.map((p) => [p[0], p[1]]));
      }
      this.styleMarker(pet);
      if (this.follow && this.selected === id) this.panTo(pet.fix);
    }
  }

  fitPets(pets) {
    const points = [];
    for (const pet of pets.values()) if (pet.fix) points.push([pet.fix.lat, pet.fix.lon]);
    if (points.length === 0) return;
    this.fitted = true;
    this.view(() => {
      if (points.length === 1) this.map.setView(points[0], 16);
      else this.map.fitBounds(points, { padding: [30, 30], maxZoom: 16 });
    });
  }

  panTo(fix) {
    const ll = L.latLng(fix.lat, fix.lon);
    if (this.map.getBounds().pad(-0.2).contains(ll)) return;
    this.map.panTo(ll, { animate: true, duration: 0.5 });
  }

  select(pets, id, { center = true } = {}) {
    const previous = this.selected;
    this.selected = id;
    for (const pid of [previous, id]) {
      const pet = pid && pets.get(pid);
      if (pet) this.styleMarker(pet);
    }
    const marker = id && this.markers.get(id);
    if (marker) {
      marker.setZIndexOffset(1000);
      if (center) this.view(() => this.map.setView(marker.getLatLng(), Math.max(this.map.getZoom(), 16)));
    }
    if (previous && previous !== id) {
      const old = this.markers.get(previous);
      if (old) old.setZIndexOffset(0);
    }
    for (const pid of [previous, id]) {
      const pet = pid && pets.get(pid);
      const trail = pid && this.trails.get(pid);
      if (pet && trail && this.trailShown(pid)) trail.setLatLngs(pet.trail.map((p) => [p[0], p[1]]));
      if (pid) this.syncTrail(pid);
    }
  }

  setFollow(on) {
    this.follow = on;
  }

  /** Live pets are hidden while a history track is shown. */
  showPets(visible) {
    if (this.petsVisible === visible) return;
    this.petsVisible = visible;
    for (const [id, marker] of this.markers) {
      if (visible) marker.addTo(this.map);
      else marker.remove();
      this.syncTrail(id);
    }
  }

  // --- history ---------------------------------------------------------------------------

  /** Draws a track: `lat` and `lon` typed arrays of equal length. */
  showTrack(lat, lon) {
    this.clearTrack();
    const latlngs = new Array(lat.length);
    for (let i = 0; i < lat.length; i += 1) latlngs[i] = [lat[i], lon[i]];
    this.track = L.layerGroup([
      L.polyline(latlngs, { renderer: this.canvas, color: '#1f6f5c', weight: 4, opacity: 0.85, interactive: false }),
      L.circleMarker(latlngs[0], { renderer: this.canvas, radius: 6, color: '#1f6f5c', fillColor: '#fff', fillOpacity: 1, weight: 3, interactive: false }),
      L.circleMarker(latlngs[latlngs.length - 1], { renderer: this.canvas, radius: 6, color: '#a33', fillColor: '#a33', fillOpacity: 1, weight: 2, interactive: false }),
    ]).addTo(this.map);
    this.view(() => this.map.fitBounds(L.latLngBounds(latlngs), { padding: [30, 30], maxZoom: 17 }));
  }

  clearTrack() {
    if (this.track) this.track.remove();
    this.track = null;
    if (this.playback) this.playback.remove();
    this.playback = null;
  }

  movePlayback(lat, lon, followIt) {
    if (!this.playback) {
      const el = h('span', { class: 'pet-pin playing' }, h('span', { class: 'pet-dot' }, '▶'));
      this.playback = L.marker([lat, lon], {
        icon: L.divIcon({ className: 'pet-marker playback', html: el, iconSize: [28, 28], iconAnchor: [14, 14] }),
        keyboard: false,
        interactive: false,
      }).addTo(this.map);
      this.playback.getElement().dataset.testid = 'playback-marker';
    } else {
      this.playback.setLatLng([lat, lon]);
    }
    if (followIt) this.panTo({ lat, lon });
  }

  /** Marks a place (where an alert happened) and shows it. */
  showSpot(lat, lon) {
    this.clearSpot();
    this.spot = L.circleMarker([lat, lon], {
      renderer: this.canvas, radius: 9, color: '#b3261e', weight: 3, fillColor: '#b3261e', fillOpacity: 0.25, interactive: false,
    }).addTo(this.map);
    this.view(() => this.map.setView([lat, lon], Math.max(this.map.getZoom(), 16)));
  }

  clearSpot() {
    if (this.spot) this.spot.remove();
    this.spot = null;
  }

  // --- zones -----------------------------------------------------------------------------

  /** Loads leaflet-geoman (drawing and editing) the first time zones are shown. */
  async geoman() {
    if (!geoman) {
      geoman = Promise.all([loadStyle(GEOMAN_CSS), loadScript(GEOMAN_JS)]).then(() => {
        // Opt in: only zones become editable, not the thousand markers and trails.
        L.PM.setOptIn(true);
        if (!this.map.pm) {
          this.map.pm = new L.PM.Map(this.map);
          this.map.pm.setGlobalOptions({});
        }
        this.map.pm.setLang('en');
        this.map.pm.setGlobalOptions({ snappable: false, continueDrawing: false });
      });
    }
    return geoman;
  }

  zoneLayer(zone) {
    const style = { renderer: this.svg, color: '#2b6cb0', weight: 2, fillOpacity: 0.12, pmIgnore: false };
    let layer;
    if (zone.shape.type === 'circle') {
      const [lon, lat] = zone.shape.center;
      layer = L.circle([lat, lon], { ...style, radius: zone.shape.radius_m });
    } else {
      const ring = zone.shape.coordinates[0].slice(0, -1).map(([lon, lat]) => [lat, lon]);
      layer = L.polygon(ring, style);
    }
    layer.bindTooltip(h('span', null, zone.name), { sticky: true });
    return layer;
  }

  setZones(zones) {
    this.clearZones();
    for (const zone of zones) {
      const layer = this.zoneLayer(zone).addTo(this.map);
      this.zoneLayers.set(zone.id, layer);
      const el = layer.getElement && layer.getElement();
      if (el) {
        el.dataset.zoneId = String(zone.id);
        el.dataset.testid = 'zone-shape';
      }
    }
  }

  clearZones() {
    for (const layer of this.zoneLayers.values()) {
      if (layer.pm && layer.pm.enabled()) layer.pm.disable();
      layer.remove();
    }
    this.zoneLayers.clear();
  }

  fitZones() {
    const layers = [...this.zoneLayers.values()];
    if (!layers.length) return;
    const bounds = layers.reduce((b, l) => b.extend(l.getBounds()), L.latLngBounds([]));
    this.view(() => this.map.fitBounds(bounds, { padding: [30, 30], maxZoom: 17 }));
  }

  fitZone(id) {
    const layer = this.zoneLayers.get(id);
    if (layer) this.view(() => this.map.fitBounds(layer.getBounds(), { padding: [40, 40], maxZoom: 17 }));
  }

  /** Starts drawing a circle or polygon; resolves with its shape, or null when cancelled. */
  async draw(kind) {
    await this.geoman();
    // Clicks on a pet's marker belong to the drawing meanwhile.
    this.el.classList.add('drawing');
    return new Promise((resolve) => {
      const done = (shape) => {
        this.map.off('pm:create', created);
        this.map.off('pm:drawend', ended);
        this.el.classList.remove('drawing');
        resolve(shape);
      };
      const created = (e) => {
        const shape = shapeOf(e.layer);
        e.layer.remove();
        done(shape);
      };
      const ended = () => setTimeout(() => done(null), 0);
      this.map.on('pm:create', created);
      this.map.on('pm:drawend', ended);
      this.map.pm.enableDraw(kind === 'circle' ? 'Circle' : 'Polygon', {
        templineStyle: { color: '#2b6cb0' },
        hintlineStyle: { color: '#2b6cb0', dashArray: [5, 5] },
        pathOptions: { color: '#2b6cb0' },
      });
    });
  }

  cancelDraw() {
    if (this.map.pm) this.map.pm.disableDraw();
  }

  /** Makes a zone's shape editable (drag vertices, resize the circle). */
  async editZone(id) {
    await this.geoman();
    const layer = this.zoneLayers.get(id);
    if (layer && layer.pm) layer.pm.enable({ allowSelfIntersection: false });
  }

  /** Ends editing and returns the edited shape. */
  finishEdit(id) {
    const layer = this.zoneLayers.get(id);
    if (!layer) return null;
    if (layer.pm && layer.pm.enabled()) layer.pm.disable();
    return shapeOf(layer);
  }

  /** The visible centre, and a radius that fits the view (for keyboard-made circles). */
  centre() {
    const c = this.map.getCenter();
    const size = this.map.getSize();
    const metres = this.map.distance(this.map.containerPointToLatLng([0, size.y / 2]), c);
    return { lat: c.lat, lon: c.lng, radius: Math.max(20, Math.round(metres / 3)) };
  }
}

/** A Leaflet circle or polygon as the API's shape. */
export function shapeOf(layer) {
  if (layer instanceof L.Circle) {
    const c = layer.getLatLng();
    return { type: 'circle', center: [round(c.lng), round(c.lat)], radius_m: Math.max(1, Math.round(layer.getRadius())) };
  }
  let ring = layer.getLatLngs();
  while (Array.isArray(ring[0])) ring = ring[0];
  const coords = ring.map((p) => [round(p.lng), round(p.lat)]);
  coords.push(coords[0]);
  return { type: 'Polygon', coordinates: [coords] };
}

function round(x) {
  return Math.round(x * 1e7) / 1e7;
}
